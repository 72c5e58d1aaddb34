// Every upstream path with every kind of undici dispatcher a user may pass (undici 7 always,
// undici 8 on Node >= 22.19): the answers are the dispatcher's (an interceptor that changes
// responses changes them), and cancellation on the watchdog, on a client leaving and on
// app.close(), and the release of unread bodies, are those of the plugin's own agent.
// One row per (dispatcher kind × path × lifecycle); each row has its own upstream, dispatcher
// and app, so that what one row leaves behind cannot make another pass or fail.
// After the table: who owns the dispatcher on app.close() (a user's pool stays open, the
// plugin's own is closed), and dispatchers that throw or are hand-written (dispatch() alone).
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { gzipSync } from 'node:zlib'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { Agent, request as undiciRequest, type Dispatcher } from 'undici'
import { OriginDeniedError, type AsyncReply, type UpstreamResponse } from '../plugin/index.js'
import { asyncGet, closeTimed, startApp, startRoute, type TestApp } from './helpers/app.js'
import { fetchText, pipeTo } from './helpers/routes.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'
import type { Test } from './helpers/context.js'
import { dispatcherKinds, type BuiltDispatcher, type DispatcherKind, type Effect } from './helpers/dispatchers.js'
import { readBody, socketClosed, startUpstream, upstreamFor, type Upstream, type UpstreamHandler } from './helpers/upstream.js'

// ---- the upstream ----

interface Seen {
  method: string
  path: string
  headers: IncomingHttpHeaders
  body: string
  req: IncomingMessage
  /** The response was written whole, or its connection closed: nothing holds the socket. */
  settled: boolean
}

/**
 * `/big` sends this many 1 MiB chunks: more than the socket buffers of both ends, so a body
 * nobody reads or releases keeps the upstream's response from ever finishing.
 */
const BIG_CHUNKS = 16
const MIB = Buffer.alloc(1024 * 1024, 'b')

/**
 * `/hello` answers `hello`; `/redirect` a 302 to `/hello`; `/gzip` a gzipped `hello`; `/flaky`
 * a 503 the first time, then `hello`; `/cacheable` a cacheable `hello`; `/big` 16 MiB;
 * `/stall` never answers. Final answers carry `x-upstream: final`, the others `interim`.
 */
function upstreamHandler (seen: Seen[]): UpstreamHandler {
  let flaky = 0
  return (req, res) => {
    const entry: Seen = { method: String(req.method), path: new URL(String(req.url), 'http://x').pathname, headers: req.headers, body: '', req, settled: false }
    seen.push(entry)
    res.once('finish', () => { entry.settled = true })
    res.once('close', () => { entry.settled = true })
    if (entry.path === '/stall') return
    void readBody(req).then((body) => {
      entry.body = body
      switch (entry.path) {
        case '/redirect':
          res.writeHead(302, { location: '/hello', 'x-upstream': 'interim' }).end()
          return
        case '/flaky':
          if (flaky++ === 0) {
            res.writeHead(503, { 'x-upstream': 'interim' }).end('busy')
            return
          }
          break
        case '/gzip':
          res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'x-upstream': 'final' }).end(gzipSync('hello'))
          return
        case '/cacheable':
          res.setHeader('cache-control', 'public, max-age=60')
          break
        case '/big':
          // Chunked: a reader can only give up after reading part of it.
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-upstream': 'final' })
          for (let i = 0; i < BIG_CHUNKS; i++) res.write(MIB)
          res.end()
          return
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'final' }).end('hello')
    })
  }
}

/** The upstream path whose answer shows what a kind does to responses. */
const ANSWER_PATH: Record<Effect, string> = {
  none: '/hello',
  dump: '/hello',
  redirect: '/redirect',
  decompress: '/gzip',
  retry: '/flaky',
  cache: '/cacheable'
}

// ---- the paths: each declares GET / on the app, fetching `target` ----

/** `answer`: relay what the upstream said; `unread`: finish without reading the body. */
type Mode = 'answer' | 'unread'

interface PathCase {
  name: string
  /** The plugin relays the upstream answer itself (a HEAD then leaves the body unread). */
  pipes: boolean
  /** The upstream request is a PUT with a header and a body, not a plain GET. */
  put: boolean
  declare: (app: FastifyInstance, target: string, mode: Mode, timeout: number) => void
}

function relay (reply: AsyncReply, res: UpstreamResponse, mode: Mode): void {
  if (mode === 'unread') {
    reply.finish('unread')
    return
  }
  res.body.text().then((text) => {
    reply.status(res.statusCode).header('x-upstream', String(res.headers['x-upstream'])).finish(text)
  }, (error: unknown) => reply.fail(error))
}

const PATHS: PathCase[] = [
  {
    name: 'fetch (promise)',
    pipes: false,
    put: false,
    declare: (app, target, mode, timeout) => asyncGet(app, '/', {
      timeout,
      async handler (_request, reply) {
        relay(reply, await reply.fetch(target), mode)
      }
    })
  },
  {
    name: 'fetch (callback)',
    pipes: false,
    put: false,
    declare: (app, target, mode, timeout) => asyncGet(app, '/', {
      timeout,
      handler (_request, reply) {
        reply.fetch(target, (err, res) => {
          if (err) return reply.fail(err)
          relay(reply, res, mode)
        })
      }
    })
  },
  {
    name: 'pipe(res) after fetch',
    pipes: true,
    put: false,
    declare: (app, target, _mode, timeout) => asyncGet(app, '/', {
      timeout,
      async handler (_request, reply) {
        await reply.pipe(await reply.fetch(target))
      }
    })
  },
  {
    name: 'pipe(url)',
    pipes: true,
    put: false,
    declare: (app, target, _mode, timeout) => asyncGet(app, '/', {
      timeout,
      handler (_request, reply) {
        return reply.pipe(target)
      }
    })
  },
  {
    name: 'pipe({ url, method, headers, body })',
    pipes: true,
    put: true,
    declare: (app, target, _mode, timeout) => asyncGet(app, '/', {
      timeout,
      handler (_request, reply) {
        return reply.pipe({ url: target, method: 'PUT', headers: { 'x-sent': 'yes', 'content-type': 'text/plain' }, body: 'payload' })
      }
    })
  },
  {
    name: 'forward',
    pipes: true,
    put: false,
    declare: (app, target, _mode, timeout) => asyncGet(app, '/', {
      timeout,
      handler (_request, reply) {
        return reply.forward(target)
      }
    })
  },
  {
    name: 'upstream option',
    pipes: false,
    put: false,
    declare: (app, target, mode, timeout) => asyncGet(app, '/', {
      timeout,
      upstream: target,
      handler (_request, reply, res) {
        relay(reply, res as UpstreamResponse, mode)
      }
    })
  }
]

// ---- one row's world ----

interface Row {
  up: Upstream
  seen: Seen[]
  built: BuiltDispatcher
  served: TestApp
  /** The upstream requests to this path. */
  to: (path: string) => Seen[]
}

async function setUp (test: Test, kind: DispatcherKind, path: PathCase, target: string, mode: Mode, options: { timeout?: number, closeGrace?: number } = {}): Promise<Row> {
  const seen: Seen[] = []
  const up = await startUpstream(upstreamHandler(seen))
  const built = await kind.build(up.origin)
  // Teardowns run last-registered first: the app, then the dispatcher, then the upstream.
  test.teardown(() => up.close())
  test.teardown(() => built.close())
  const served = await startApp(test, { dispatcher: built.dispatcher, closeGrace: options.closeGrace ?? 1000 }, (app) => {
    path.declare(app, `${built.origin}${target}`, mode, options.timeout ?? 5000)
  })
  return { up, seen, built, served, to: (p) => seen.filter((s) => s.path === p) }
}

function codeOf (body: string): unknown {
  try {
    return (JSON.parse(body) as { code?: unknown }).code
  } catch {
    return body
  }
}

/** The dispatcher given was the one that connected (the plugin's own agent cannot be seen). */
function assertUsed (test: Test, row: Row): void {
  if (row.built.used !== null) test.ok(row.built.used() > 0, 'the request went through the dispatcher given')
}

/**
 * undici's dump interceptor replaces the request's `abort` with "stop delivering, dump the
 * rest": a request cancelled before its head keeps its socket until the upstream answers.
 */
const DUMP_KEEPS_SOCKET = "undici's dump interceptor turns abort() into 'dump the rest': the socket stays until the upstream answers"

/** The upstream's side of a stalled request's connection closes: the dispatcher cancelled it. */
async function assertStallCancelled (test: Test, kind: DispatcherKind, row: Row): Promise<void> {
  const stalled = row.to('/stall')[0]
  test.ok(stalled, 'the upstream saw the request')
  if (stalled !== undefined) await assertClosed(test, kind, stalled)
}

async function assertClosed (test: Test, kind: DispatcherKind, stalled: Seen): Promise<void> {
  let closed = false
  void socketClosed(stalled.req).then(() => { closed = true })
  const todo = kind.effect === 'dump' ? DUMP_KEEPS_SOCKET : false
  await waitFor(() => closed, todo === false ? 2000 : 300).catch(() => {})
  test.ok(closed, "the upstream request's socket closed", { todo })
}

// ---- the lifecycles ----

/** Long enough for the upstream request to reach the upstream first, even on a busy machine. */
const WATCHDOG_MS = 300

interface Lifecycle {
  name: string
  run: (test: Test, kind: DispatcherKind, path: PathCase) => Promise<void>
}

const LIFECYCLES: Lifecycle[] = [
  {
    name: 'answer',
    run: async (test, kind, path) => {
      const target = ANSWER_PATH[kind.effect]
      const row = await setUp(test, kind, path, target, 'answer')
      const answers = kind.effect === 'cache' ? 2 : 1
      for (let i = 0; i < answers; i++) {
        const res = await request(`${row.served.url}/`, { timeout: 3000 })
        test.equal(res.statusCode, 200, 'status')
        test.equal(res.body, kind.effect === 'dump' ? '' : 'hello', kind.effect === 'dump' ? 'the dump interceptor emptied the body' : 'body')
        test.equal(res.headers['x-upstream'], 'final', 'the final answer\'s header')
        test.ok(res.complete, 'a complete response')
        if (path.pipes) test.equal(res.headers['content-encoding'], undefined, 'no content-encoding left on a decoded body')
      }
      switch (kind.effect) {
        case 'redirect':
          test.equal(row.to('/redirect').length, 1, 'the 302 was asked once')
          test.equal(row.to('/hello').length, 1, 'and followed')
          break
        case 'retry':
          test.equal(row.to('/flaky').length, 2, 'the 503 was retried')
          break
        case 'cache':
          // undici caches GET only.
          test.equal(row.to('/cacheable').length, path.put ? 2 : 1, path.put ? 'a PUT is not cached' : 'the second answer came from the cache')
          break
        default:
          test.equal(row.to(target).length, 1, 'one upstream request')
      }
      const last = row.seen.at(-1)
      if (path.put) {
        test.match(last, { method: 'PUT', body: 'payload', headers: { 'x-sent': 'yes' } }, 'the upstream got the method, header and body')
      } else {
        test.equal(last?.method, 'GET')
      }
      assertUsed(test, row)
    }
  },
  {
    name: 'watchdog',
    run: async (test, kind, path) => {
      const row = await setUp(test, kind, path, '/stall', 'answer', { timeout: WATCHDOG_MS })
      const res = await request(`${row.served.url}/`, { timeout: 3000 })
      test.equal(res.statusCode, 504)
      test.equal(codeOf(res.body), 'FST_ASYNC_ROUTE_TIMEOUT')
      // On a busy machine the watchdog may fire before the request reached the upstream:
      // then it must not reach it later with its socket left open.
      await sleep(50)
      const stalled = row.to('/stall')[0]
      if (stalled === undefined) test.comment('the watchdog fired before the request reached the upstream')
      else await assertClosed(test, kind, stalled)
      test.equal(row.served.app.asyncRoute.stats().timedOut, 1)
    }
  },
  {
    name: 'client abort',
    run: async (test, kind, path) => {
      const row = await setUp(test, kind, path, '/stall', 'answer')
      const req = await sendOnly(`${row.served.url}/`)
      await waitFor(() => row.to('/stall').length === 1, 2000, 'the upstream request')
      req.destroy()
      await assertStallCancelled(test, kind, row)
      await waitFor(() => row.served.app.asyncRoute.stats().aborted === 1, 2000, 'the abort to be counted')
    }
  },
  {
    name: 'app.close()',
    run: async (test, kind, path) => {
      const row = await setUp(test, kind, path, '/stall', 'answer', { closeGrace: 50 })
      const pending = request(`${row.served.url}/`, { timeout: 3000 })
      await waitFor(() => row.to('/stall').length === 1, 2000, 'the upstream request')
      test.ok(await closeTimed(row.served.app) < 1500, 'close() resolved soon after the grace')
      const res = await pending
      test.equal(res.statusCode, 503)
      test.equal(codeOf(res.body), 'FST_ASYNC_ROUTE_CLOSING')
      await assertStallCancelled(test, kind, row)
      const dispatcher = row.built.dispatcher
      if (dispatcher !== undefined) {
        const after = await dispatcher.request({ origin: row.built.origin, path: '/hello', method: 'GET' })
        await after.body.dump()
        test.equal(after.statusCode, 200, 'the dispatcher given is still open')
      }
    }
  },
  {
    name: 'unread body released',
    run: async (test, kind, path) => {
      const row = await setUp(test, kind, path, '/big', 'unread')
      // A pipe reads the body itself, except for a HEAD: then it must release it.
      const method = path.pipes ? 'HEAD' : 'GET'
      for (let i = 0; i < 2; i++) {
        const res = await request(`${row.served.url}/`, { method, timeout: 3000 })
        test.equal(res.statusCode, 200)
        test.equal(res.body, path.pipes ? '' : 'unread')
      }
      const big = row.to('/big')
      test.equal(big.length, 2, 'both requests reached the upstream')
      // A body neither read nor released keeps its socket: the upstream's response could never
      // finish (nor, on a Client, could a second request be sent at all).
      await waitFor(() => big.every((seen) => seen.settled), 2000, 'the upstream responses to be read or their sockets closed')
      test.pass('no upstream socket held')
    }
  }
]

// ---- the table ----

/** Rows of one kind run this many at a time: most of a row is waiting on timers. */
const JOBS = 6
const kinds = await dispatcherKinds()
const rows = kinds.flatMap((kind) => PATHS.flatMap((path) => LIFECYCLES.map((lifecycle) => ({ kind, path, lifecycle }))))

t.comment(`${kinds.length} dispatcher kinds × ${PATHS.length} paths × ${LIFECYCLES.length} lifecycles = ${rows.length} rows`)
for (const kind of kinds) {
  t.test(kind.name, { jobs: JOBS }, async (t) => {
    for (const { path, lifecycle } of rows.filter((row) => row.kind === kind)) {
      t.test(`${path.name}: ${lifecycle.name}`, (t) => lifecycle.run(t, kind, path))
    }
  })
}

// ---- beyond the table: ownership, failing and hand-written dispatchers ----

/** An Agent that counts the requests dispatched through it. */
class CountingAgent extends Agent {
  dispatched = 0
  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.dispatched++
    return super.dispatch(options, handler)
  }
}

t.test('a user dispatcher is used by fetch, pipe and upstream, and app.close() does not close it', async (t) => {
  const up = await upstreamFor(t, (req, res) => res.end(`hello ${req.url}`))
  const dispatcher = new CountingAgent()
  t.teardown(() => dispatcher.destroy())
  const { url, app } = await startApp(t, { dispatcher }, (app) => {
    asyncGet(app, '/fetch', fetchText(`${up.origin}/a`))
    asyncGet(app, '/pipe', pipeTo(`${up.origin}/b`))
    asyncGet(app, '/upstream', {
      upstream: `${up.origin}/c`,
      handler (_request, reply, res) {
        return reply.pipe(res!)
      }
    })
  })
  t.equal((await request(`${url}/fetch`)).body, 'hello /a')
  t.equal((await request(`${url}/pipe`)).body, 'hello /b')
  t.equal((await request(`${url}/upstream`)).body, 'hello /c')
  t.equal(dispatcher.dispatched, 3, 'every upstream request went through the user dispatcher')
  t.equal(up.openSockets(), 1, 'its pool keeps the connection')
  await app.close()
  t.notOk(dispatcher.closed, 'the user dispatcher is not closed')
  t.notOk(dispatcher.destroyed, 'nor destroyed')
  t.equal(up.openSockets(), 1, 'its pooled connection is still open')
  const after = await undiciRequest(`${up.origin}/after`, { dispatcher })
  t.equal(await after.body.text(), 'hello /after', 'it still works after app.close()')
  t.equal(dispatcher.dispatched, 4)
})

t.test('the plugin\'s own dispatcher is closed by app.close(): its upstream sockets get closed', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('pooled'))
  const { url, app } = await startRoute(t, {}, fetchText(up.url))
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal(up.connections(), 1, 'one keep-alive connection, reused')
  t.equal(up.openSockets(), 1, 'kept open in the plugin\'s pool')
  await app.close()
  // undici keeps this idle socket about 3 s (the upstream's keep-alive hint less its 2 s
  // margin): closing within 1.5 s is app.close(), not that timeout.
  await waitFor(() => up.openSockets() === 0, 1500, 'the pooled upstream socket to close')
  t.equal(up.openSockets(), 0)
})

// A dispatcher that throws before connecting: the error is mapped like undici's own.
const dispatcherFailures = [
  { name: 'a code-less error gives 502', error: () => new Error('interceptor broke'), status: 502, code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR' },
  { name: 'ETIMEDOUT gives 504', error: () => Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' }), status: 504, code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT' },
  { name: 'one of the plugin\'s own errors keeps that error', error: () => new OriginDeniedError(), status: 500, code: 'FST_ASYNC_ROUTE_ORIGIN_DENIED' },
  { name: 'a connect timeout gives 504', error: () => Object.assign(new Error('Connect Timeout Error'), { code: 'UND_ERR_CONNECT_TIMEOUT' }), status: 504, code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT' }
]

for (const failure of dispatcherFailures) {
  t.test(`a user dispatcher failing with ${failure.name}`, async (t) => {
    const up = await upstreamFor(t)
    const dispatcher = new Agent().compose(() => () => { throw failure.error() })
    t.teardown(() => dispatcher.destroy())
    const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
      await reply.fetch(up.url)
      reply.finish('unexpected')
    })
    const res = await request(`${url}/`)
    t.equal(res.statusCode, failure.status)
    t.equal(JSON.parse(res.body).code, failure.code)
    t.equal(up.connections(), 0, 'nothing reached the upstream')
  })
}

t.test('a hand-written dispatcher: one with dispatch() alone works; one whose request() throws gives 502', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('through dispatch'))
  const agent = new Agent()
  t.teardown(() => agent.close())
  const plain = { dispatch: (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) => agent.dispatch(options, handler) } as unknown as Agent
  const { url } = await startRoute(t, { dispatcher: plain }, async (_request, reply) => { reply.finish(await (await reply.fetch(up.url)).body.text()) })
  t.equal((await request(`${url}/`)).body, 'through dispatch')
  const throwing = { dispatch () { return true }, request () { throw new Error('request exploded') } } as unknown as Agent
  const { url: other } = await startRoute(t, { dispatcher: throwing }, async (_request, reply) => { await reply.fetch(up.url) })
  const res = await request(`${other}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
})
