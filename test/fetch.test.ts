// reply.fetch(): promise and callback styles, undici options reaching a real upstream, the
// mapping of upstream failures to 502/504 as the client sees it (URLs refused before
// connecting included), callbacks that throw, fetches cancelled because their reply ended, and
// fetched bodies a handler never reads.
import t from 'tap'
import { Agent, DecoratorHandler, type Dispatcher } from 'undici'
import { BAD_UPSTREAM_REQUEST, UPSTREAM_ERROR, UPSTREAM_TIMEOUT } from './helpers/answers.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute, type LogLine } from './helpers/app.js'
import { fetchText } from './helpers/routes.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'
import type { Test } from './helpers/context.js'
import { echo, refusedOrigin, upstreamFor, type UpstreamHandler } from './helpers/upstream.js'

/** The upstream never answers (the socket stays open until the upstream is closed). */
const stall: UpstreamHandler = () => {}

function portOf (url: string): string {
  return new URL(url).port
}

/** The client-facing error body names no upstream host, port or URL. */
function assertNoUpstreamDetails (test: Test, body: string, upstreamUrl: string): void {
  test.notOk(body.includes('127.0.0.1'), 'the answer does not name the upstream host')
  test.notOk(body.includes(portOf(upstreamUrl)), 'the answer does not name the upstream port')
  test.notOk(body.includes('stack'), 'the answer carries no stack')
}

function errorLines (logs: LogLine[]): LogLine[] {
  return logsAt(logs, LEVEL.error)
}

t.test('fetch as a promise resolves with the upstream response, and method, headers and body reach the upstream', async (t) => {
  const up = await upstreamFor(t, echo(201))
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(`${up.origin}/path?q=1`, {
      method: 'POST',
      headers: { 'x-test': 'from-handler', 'content-type': 'text/plain' },
      body: 'hello upstream'
    })
    const text = await res.body.text()
    reply.status(res.statusCode).header('x-upstream', String(res.headers['x-upstream'])).finish(text)
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 201, 'the handler relayed the upstream status')
  t.equal(res.headers['x-upstream'], 'echo')
  const seen = JSON.parse(res.body)
  t.equal(seen.method, 'POST', 'the upstream saw the method')
  t.equal(seen.url, '/path?q=1', 'the upstream saw path and query')
  t.equal(seen.headers['x-test'], 'from-handler', 'the upstream saw the header')
  t.equal(seen.body, 'hello upstream', 'the upstream saw the body')
  t.equal(up.requests.length, 1)
})

t.test('fetch with a callback calls back with (null, res) and returns nothing', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('upstream body'))
  let returned: unknown = 'not set'
  const { url } = await startRoute(t, {}, (_request, reply) => {
    returned = reply.fetch(up.url, (err, res) => {
      if (err) return reply.fail(err)
      res.body.text().then((text) => reply.finish(`got: ${text} (${res.statusCode})`), (error) => reply.fail(error))
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'got: upstream body (200)')
  t.equal(returned, undefined, 'the callback form returns undefined')
})

t.test('fetch(url, options, callback) passes the options to the upstream', async (t) => {
  const up = await upstreamFor(t, echo(201))
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(new URL('/put', up.origin), { method: 'PUT', headers: { 'x-opt': '1' }, body: 'put body' }, (err, res) => {
      if (err) return reply.fail(err)
      res.body.json().then((json) => reply.finish(json as Record<string, unknown>), (error) => reply.fail(error))
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  const seen = JSON.parse(res.body)
  t.equal(seen.method, 'PUT')
  t.equal(seen.url, '/put')
  t.equal(seen.headers['x-opt'], '1')
  t.equal(seen.body, 'put body')
})

t.test('fetch callback gets an error with code and statusCode when the upstream refuses', async (t) => {
  const refused = await refusedOrigin()
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(`${refused}/`, (err, res) => {
      reply.finish({
        isError: err instanceof Error,
        code: (err as { code?: string } | null)?.code,
        statusCode: (err as { statusCode?: number } | null)?.statusCode,
        message: err?.message,
        res: res === undefined ? 'undefined' : 'defined'
      })
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  const seen = JSON.parse(res.body)
  t.same(seen, {
    isError: true,
    code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR',
    statusCode: 502,
    message: 'The upstream request failed',
    res: 'undefined'
  })
  t.notOk(res.body.includes(portOf(refused)), 'the error message does not name the port')
})

t.test('a rejected fetch carries code and statusCode, and its cause keeps the undici error', async (t) => {
  const refused = await refusedOrigin()
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    try {
      await reply.fetch(`${refused}/`)
      reply.finish('unexpected')
    } catch (error) {
      const err = error as Error & { code: string, statusCode: number, cause?: { code?: string } }
      reply.finish({ code: err.code, statusCode: err.statusCode, causeCode: err.cause?.code })
    }
  })
  const res = await request(`${url}/`)
  t.same(JSON.parse(res.body), { code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', statusCode: 502, causeCode: 'ECONNREFUSED' })
})

t.test('upstream refused: the client gets 502 FST_ASYNC_ROUTE_UPSTREAM_ERROR without the upstream address, the log keeps the cause', async (t) => {
  const refused = await refusedOrigin()
  const { url, logs } = await startRoute(t, {}, fetchText(`${refused}/secret-path`))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.match(res.headers['content-type'], /^application\/json/)
  t.same(JSON.parse(res.body), UPSTREAM_ERROR)
  assertNoUpstreamDetails(t, res.body, refused)
  t.notOk(res.body.includes('secret-path'), 'the answer does not name the upstream path')
  const lines = errorLines(logs)
  t.equal(lines.length, 1, 'one error line')
  const logged = JSON.stringify(lines[0])
  t.ok(logged.includes('ECONNREFUSED'), 'the error log keeps the undici cause')
  t.ok(logged.includes(portOf(refused)), 'the error log names the upstream port')
})

t.test('upstream resets the socket before answering: 502', async (t) => {
  const up = await upstreamFor(t, (req) => req.socket.resetAndDestroy())
  const { url, logs } = await startRoute(t, {}, fetchText(up.url))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  assertNoUpstreamDetails(t, res.body, up.url)
  t.equal(up.connections(), 1, 'the upstream was reached')
  t.equal(errorLines(logs).length, 1)
})

t.test('upstream answers with non-HTTP bytes: 502', async (t) => {
  const up = await upstreamFor(t, (req) => { req.socket.end('SSH-2.0-OpenSSH_9.6 this is not http\r\n\r\n') })
  const { url } = await startRoute(t, {}, fetchText(up.url))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.same(JSON.parse(res.body), UPSTREAM_ERROR)
  assertNoUpstreamDetails(t, res.body, up.url)
})

t.test('upstream stalls before its head past headersTimeout: 504 FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT', async (t) => {
  const up = await upstreamFor(t, stall)
  const { url, logs } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url, { headersTimeout: 100 })
    reply.finish(await res.body.text())
  })
  const started = Date.now()
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.same(JSON.parse(res.body), UPSTREAM_TIMEOUT)
  t.ok(Date.now() - started >= 90, 'not before the headers timeout')
  assertNoUpstreamDetails(t, res.body, up.url)
  const lines = errorLines(logs)
  t.equal(lines.length, 1)
  t.match(lines[0]?.err, { code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT', stack: /caused by: HeadersTimeoutError/ }, 'the log keeps the undici cause')
})

/** Sends the head and part of a content-length body, then does `then` with the response. */
/** 100 of 1000 bytes, then a stall, a close (undici: other side closed) or a reset (ECONNRESET). */
function partialBody (then: 'stall' | 'destroy' | 'reset'): UpstreamHandler {
  return (_req, res) => {
    res.setHeader('content-length', 1000)
    res.write('x'.repeat(100), () => {
      if (then === 'destroy') setTimeout(() => res.socket?.destroy(), 20)
      if (then === 'reset') setTimeout(() => res.socket?.resetAndDestroy(), 20)
    })
  }
}

t.test('upstream stalls mid-body past bodyTimeout while the handler reads it, the error escapes: 504', async (t) => {
  const up = await upstreamFor(t, partialBody('stall'))
  let readError: unknown
  const { url, logs } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url, { bodyTimeout: 100 })
    try {
      await res.body.text()
    } catch (error) {
      readError = error
      throw error
    }
    reply.finish('unexpected')
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.same(JSON.parse(res.body), UPSTREAM_TIMEOUT)
  t.equal((readError as { code?: string }).code, 'UND_ERR_BODY_TIMEOUT', 'reading the body threw undici\'s body timeout')
  assertNoUpstreamDetails(t, res.body, up.url)
  const lines = errorLines(logs)
  t.equal(lines.length, 1)
  t.match(lines[0]?.err, { code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT', stack: /caused by: BodyTimeoutError/ }, 'the log keeps the undici cause')
})

t.test('upstream stalls mid-body past bodyTimeout, the handler passes the error to reply.fail: 504', async (t) => {
  const up = await upstreamFor(t, partialBody('stall'))
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url, { bodyTimeout: 100 }, (err, res) => {
      if (err) return reply.fail(err)
      res.body.text().then((text) => reply.finish(text), (error: unknown) => reply.fail(error))
    })
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
  assertNoUpstreamDetails(t, res.body, up.url)
})

// A socket error undici passes through mid-body (ECONNRESET) maps to 502 like a closed socket.
for (const then of ['destroy', 'reset'] as const) {
  t.test(`upstream ${then === 'reset' ? 'resets (ECONNRESET)' : 'closes its socket'} mid-body while the handler reads it: 502`, async (t) => {
    const up = await upstreamFor(t, partialBody(then))
    const { url, logs } = await startRoute(t, {}, fetchText(up.url))
    const res = await request(`${url}/`, { timeout: 5000 })
    t.equal(res.statusCode, 502)
    t.same(JSON.parse(res.body), UPSTREAM_ERROR)
    assertNoUpstreamDetails(t, res.body, up.url)
    const lines = errorLines(logs)
    t.equal(lines.length, 1)
    const cause = then === 'reset' ? /caused by: Error: read ECONNRESET/ : /caused by: SocketError/
    t.match(lines[0]?.err, { code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', stack: cause }, 'the log keeps the cause')
  })
}

t.test('a throw inside the fetch callback fails the reply with 500, not the process', async (t) => {
  const up = await upstreamFor(t)
  const { url, logs } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url, () => {
      throw new Error('callback broke')
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.same(JSON.parse(res.body), { statusCode: 500, error: 'Internal Server Error', message: 'callback broke' })
  const lines = errorLines(logs)
  t.equal(lines.length, 1, 'logged at error level')
  t.equal(lines[0]?.msg, 'callback broke')
  // The app still serves.
  const again = await request(`${url}/`)
  t.equal(again.statusCode, 500)
})

t.test('a fetch callback that throws a non-Error value fails the reply with 500', async (t) => {
  const up = await upstreamFor(t)
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url, () => {
      // eslint-disable-next-line no-throw-literal
      throw null
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.equal(JSON.parse(res.body).message, 'null')
})

t.test('a fetch callback that returns a rejected promise fails the reply with its status', async (t) => {
  const up = await upstreamFor(t)
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url, async (err, res) => {
      if (err) throw err
      await res.body.dump()
      throw Object.assign(new Error('teapot upstream'), { statusCode: 418, code: 'E_TEAPOT' })
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 418)
  t.same(JSON.parse(res.body), { statusCode: 418, code: 'E_TEAPOT', error: "I'm a Teapot", message: 'teapot upstream' })
})

t.test('a fetch callback whose promise resolves after finishing leaves the reply as finished', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('fine'))
  const { url, logs } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url, async (err, res) => {
      if (err) throw err
      reply.finish(await res.body.text())
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'fine')
  t.equal(errorLines(logs).length, 0)
})

t.test('a fetch started after the reply ended rejects with FST_ASYNC_ROUTE_CANCELLED without connecting', async (t) => {
  const up = await upstreamFor(t)
  let late: { code?: string, statusCode?: number } | undefined
  let calledBack: { code?: string } | null | undefined
  const { url } = await startRoute(t, {}, (_request, reply) => {
    reply.finish('done')
    reply.fetch(up.url).then(() => { late = { code: 'resolved' } }, (error: { code?: string, statusCode?: number }) => { late = error })
    reply.fetch(up.url, (err) => { calledBack = err as { code?: string } | null })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'done')
  await waitFor(() => late !== undefined && calledBack !== undefined, 2000, 'the late fetches to settle')
  t.equal(late?.code, 'FST_ASYNC_ROUTE_CANCELLED', 'the promise rejects as cancelled')
  t.equal(calledBack?.code, 'FST_ASYNC_ROUTE_CANCELLED', 'the callback gets the cancellation')
  t.equal(up.connections(), 0, 'the upstream was never contacted')
})

t.test('a fetch pending when the handler finishes is cancelled: it rejects and the upstream sees its request closed', async (t) => {
  let upstreamClosed!: () => void
  const closed = new Promise<void>((resolve) => { upstreamClosed = resolve })
  let arrived!: () => void
  const arrival = new Promise<void>((resolve) => { arrived = resolve })
  const up = await upstreamFor(t, (_req, res) => {
    res.on('close', () => upstreamClosed())
    arrived()
  })
  let outcome: { code?: string } | undefined
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    const pending = reply.fetch(up.url).then(
      () => { outcome = { code: 'resolved' } },
      (error: { code?: string }) => { outcome = error })
    await arrival
    reply.finish('finished first')
    await pending
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'finished first')
  await waitFor(() => outcome !== undefined, 2000, 'the pending fetch to settle')
  t.equal(outcome?.code, 'FST_ASYNC_ROUTE_CANCELLED')
  await closed
  t.pass('the upstream saw its request closed')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 1, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('a fetch whose reply ends just as the upstream head arrives rejects as cancelled instead of yielding the response', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('too late'))
  // A user dispatcher whose hook runs right after undici delivered the head, before the
  // plugin's code sees the response: the reply is ended exactly in that gap.
  let onHead: (() => void) | null = null
  type OnResponseStart = NonNullable<Dispatcher.DispatchHandler['onResponseStart']>
  // undici's typings declare no methods on DecoratorHandler; its code has them all.
  interface Decorated { onResponseStart (...args: Parameters<OnResponseStart>): void }
  const Decorator = DecoratorHandler as unknown as new (handler: Dispatcher.DispatchHandler) => Decorated
  class HeadHook extends Decorator {
    override onResponseStart (...args: Parameters<OnResponseStart>): void {
      super.onResponseStart(...args)
      onHead?.()
    }
  }
  const dispatcher = new Agent().compose((dispatch) => (options, handler) => dispatch(options, new HeadHook(handler)))
  t.teardown(() => dispatcher.destroy())
  let outcome: { code?: string } | undefined
  const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    onHead = () => reply.finish('finished at the upstream head')
    try {
      const res = await reply.fetch(up.url)
      outcome = { code: `resolved ${res.statusCode}` }
    } catch (error) {
      outcome = error as { code?: string }
    }
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'finished at the upstream head')
  await waitFor(() => outcome !== undefined, 2000, 'the fetch to settle')
  t.equal(outcome?.code, 'FST_ASYNC_ROUTE_CANCELLED', 'the response is never handed out')
})

t.test('a fetch pending when the watchdog fires is cancelled and the callback gets the error', async (t) => {
  const up = await upstreamFor(t, stall)
  let calledBack: { code?: string, cause?: { code?: string } } | undefined
  const { url } = await startRoute(t, { timeout: 100 }, (_request, reply) => {
    reply.fetch(up.url, (err) => {
      calledBack = err as { code?: string }
      if (err) return reply.fail(err)
      reply.finish('unexpected')
    })
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  await waitFor(() => calledBack !== undefined, 2000, 'the callback')
  t.equal(calledBack?.code, 'FST_ASYNC_ROUTE_CANCELLED')
  t.equal(calledBack?.cause?.code, 'FST_ASYNC_ROUTE_TIMEOUT', 'the cause says how the reply ended')
  await waitFor(() => up.openSockets() === 0, 2000, 'the upstream socket to close')
})

t.test('a fetch pending when the client leaves is cancelled and the upstream sees its request closed', async (t) => {
  let arrived!: () => void
  const arrival = new Promise<void>((resolve) => { arrived = resolve })
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.on('close', () => { upstreamClosed = true })
    arrived()
  })
  let outcome: { code?: string } | undefined
  const { url, app } = await startRoute(t, {}, (_request, reply) => {
    reply.fetch(up.url).then(() => { outcome = { code: 'resolved' } }, (error: { code?: string }) => { outcome = error })
  })
  const client = await sendOnly(`${url}/`)
  await arrival
  client.destroy()
  await waitFor(() => outcome !== undefined && upstreamClosed, 2000, 'cancellation')
  t.equal(outcome?.code, 'FST_ASYNC_ROUTE_CANCELLED')
  t.equal(app.asyncRoute.stats().aborted, 1)
})

t.test('an upstream host that does not resolve (DNS failure) gives 502', async (t) => {
  const dispatcher = new Agent({
    connect: {
      lookup: (_hostname, _options, callback) => callback(Object.assign(new Error('getaddrinfo ENOTFOUND upstream.invalid'), { code: 'ENOTFOUND' }), '', 4)
    }
  })
  t.teardown(() => dispatcher.destroy())
  const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    await reply.fetch('http://upstream.invalid/')
    reply.finish('unexpected')
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  t.notMatch(res.body, /upstream\.invalid/, 'the host is not echoed to the client')
})

t.test('reply.fetch() of a URL undici cannot parse rejects with the upstream error, and the reply answers 502', async (t) => {
  let calledBack = null as { code?: string } | null
  const { url, app } = await startApp(t, {}, (app) => {
    asyncGet(app, '/callback', {
      handler (_request, reply) {
        reply.fetch('not a url', (err) => {
          calledBack = err as { code?: string }
          reply.finish('called back')
        })
      }
    })
    asyncGet(app, '/escapes', {
      async handler (_request, reply) {
        await reply.fetch('not a url')
        reply.finish('never')
      }
    })
  })
  const escaped = await request(`${url}/escapes`)
  t.equal(escaped.statusCode, 500)
  t.equal(JSON.parse(escaped.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  t.notMatch(escaped.body, 'not a url', 'the URL is not echoed to the client')
  const res = await request(`${url}/callback`)
  t.equal(res.body, 'called back')
  t.equal(calledBack?.code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  t.match(app.asyncRoute.stats(), { started: 2, finished: 1, failed: 1, rejected: 0, pending: 0 })
})

t.test('reply.fetch() of a URL that is not http: is refused before connecting (500); an https: origin that refuses fails with the upstream error', async (t) => {
  const refused = (await refusedOrigin()).replace('http:', 'https:')
  const codes: Record<string, string | undefined> = {}
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/:which', {
      handler (request, reply) {
        const which = (request.params as { which: string }).which
        reply.fetch(which === 'ftp' ? 'ftp://127.0.0.1/file' : `${refused}/`, (err) => {
          codes[which] = (err as { code?: string } | null)?.code
          reply.finish('done')
        })
      }
    })
  })
  t.equal((await request(`${url}/ftp`)).body, 'done')
  t.equal((await request(`${url}/https`)).body, 'done')
  t.same(codes, { ftp: 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST', https: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR' })
})

// ---- fetched bodies a handler never reads ----

t.test('bodies a handler never reads are released: more requests than pool connections all complete', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('x'.repeat(1000)))
  const dispatcher = new Agent({ connections: 2 })
  t.teardown(() => dispatcher.destroy())
  const { url, app } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(`status ${res.statusCode}`)
  })
  // Five at once, then five one after the other.
  const concurrent = await Promise.all(Array.from({ length: 5 }, () => request(`${url}/`, { timeout: 3000 })))
  for (const res of concurrent) t.equal(res.body, 'status 200')
  for (let i = 0; i < 5; i++) {
    const res = await request(`${url}/`, { timeout: 3000 })
    t.equal(res.body, 'status 200')
  }
  t.equal(up.requests.length, 10, 'every request reached the upstream')
  t.ok(up.connections() <= 2, `the pool never needed more than its 2 connections (${up.connections()})`)
  t.same(app.asyncRoute.stats(), { started: 10, finished: 10, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('a large body a handler never reads does not hold the pool', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 4 * 1024 * 1024)
    res.end(Buffer.alloc(4 * 1024 * 1024, 'z'))
  })
  const dispatcher = new Agent({ connections: 1 })
  t.teardown(() => dispatcher.destroy())
  const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(`length ${String(res.headers['content-length'])}`)
  })
  for (let i = 0; i < 3; i++) {
    const res = await request(`${url}/`, { timeout: 3000 })
    t.equal(res.body, `length ${4 * 1024 * 1024}`)
  }
  t.equal(up.requests.length, 3)
  await waitFor(() => up.openSockets() <= 1, 2000, 'no more than the pool\'s one connection open')
})

t.test('an unread body whose upstream dies afterwards does not crash the process', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1_000_000)
    res.write(Buffer.alloc(10_000), () => setTimeout(() => res.socket?.destroy(), 30))
  })
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    await reply.fetch(up.url)
    reply.finish('finished without reading')
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'finished without reading')
  await waitFor(() => up.openSockets() === 0, 2000, 'the upstream socket to go')
  const again = await request(`${url}/`)
  t.equal(again.body, 'finished without reading', 'the app still serves')
})

t.test('a reply that fails with an unread upstream body destroys it: the upstream connection is closed', async (t) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1_000_000)
    res.on('close', () => { upstreamClosed = true })
    res.write(Buffer.alloc(1000))
  })
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    await reply.fetch(up.url)
    throw Object.assign(new Error('gave up'), { statusCode: 503 })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 503)
  t.equal(JSON.parse(res.body).message, 'gave up')
  await waitFor(() => upstreamClosed && up.openSockets() === 0, 2000, 'the upstream response to be torn down')
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('a fetched body counts as in flight until read: pending() lists it, then not', async (t) => {
  let release!: () => void
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 10)
    res.write('01234')
    release = () => res.end('56789')
  })
  let readStarted = false
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(`${up.origin}/slow-body`)
    readStarted = true
    reply.finish(await res.body.text())
  })
  const pending = request(`${url}/`, { timeout: 5000 })
  await waitFor(() => readStarted, 2000, 'the handler to read the body')
  const [entry] = app.asyncRoute.pending()
  t.equal(entry?.inflight.length, 1, 'the body being read is in flight')
  t.equal(entry?.inflight[0]?.url, `${up.origin}/slow-body`)
  t.equal(entry?.inflight[0]?.method, 'GET')
  release()
  const res = await pending
  t.equal(res.body, '0123456789')
  t.same(app.asyncRoute.pending(), [])
})

t.test('an upstream body that fails while the handler is busy elsewhere does not crash the process', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.write('partial', () => setTimeout(() => res.socket?.destroy(), 10))
  })
  const { url, logs } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    // Busy with something else (no reader on the body) while the upstream dies.
    await new Promise((resolve) => res.body.once('close', resolve))
    reply.finish('carried on')
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'carried on')
  t.same(logsAt(logs, LEVEL.error), [])
})

t.test('a fire-and-forget fetch whose reply ended first is not an unhandled rejection; awaiting one still throws', async (t) => {
  const up = await upstreamFor(t, (_req, res) => setTimeout(() => res.end('late'), 100))
  let awaited: unknown
  const { url } = await startApp(t, { timeout: 50 }, (app) => {
    asyncGet(app, '/forget', {
      handler (_request, reply) {
        void reply.fetch(up.url)
        reply.finish('done')
      }
    })
    app.asyncRoute({ method: 'GET', url: '/watchdog', handler (_request, reply) { void reply.fetch(up.url) } })
    asyncGet(app, '/after', {
      handler (_request, reply) {
        reply.finish('first')
        // A fetch on an ended reply is refused at once: the same "your reply ended" rejection.
        void reply.fetch(up.url)
      }
    })
    asyncGet(app, '/awaited', {
      async handler (_request, reply) {
        const pending = reply.fetch(up.url)
        reply.finish('done')
        try {
          await pending
        } catch (error) {
          awaited = error
        }
      }
    })
  })
  t.equal((await request(`${url}/forget`)).body, 'done')
  t.equal((await request(`${url}/watchdog`)).statusCode, 504)
  t.equal((await request(`${url}/after`)).body, 'first')
  t.equal((await request(`${url}/awaited`)).body, 'done')
  await waitFor(() => awaited !== undefined, 2000, 'the awaited fetch to settle')
  t.equal((awaited as { code?: string }).code, 'FST_ASYNC_ROUTE_CANCELLED')
  // Give any unhandled rejection time to surface: the helpers' listener fails the test.
  await sleep(200)
})

t.test('an upstream request undici refuses before connecting answers 500 FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST, logged with the reason', async (t) => {
  const up = await upstreamFor(t)
  const refusedHeaders: Array<Record<string, string>> = [
    { 'transfer-encoding': 'chunked' },
    { expect: '100-continue' },
    { 'keep-alive': 'timeout=5' },
    { upgrade: 'websocket' }
  ]
  const { url, logs } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'POST',
      url: '/fetch/:i',
      async handler (request, reply) {
        const headers = refusedHeaders[Number((request.params as { i: string }).i)]
        const res = await reply.fetch(up.url, { method: 'POST', headers, body: 'x' })
        reply.finish(await res.body.text())
      }
    })
    app.asyncRoute({
      method: 'POST',
      url: '/pipe/:i',
      handler (request, reply) {
        const headers = refusedHeaders[Number((request.params as { i: string }).i)]
        return reply.pipe(up.url, { method: 'POST', headers, body: 'x' })
      }
    })
  })
  for (const path of ['fetch', 'pipe']) {
    for (let i = 0; i < refusedHeaders.length; i++) {
      const res = await request(`${url}/${path}/${i}`, { method: 'POST' })
      const name = `${path} with ${Object.keys(refusedHeaders[i] as object)[0]}`
      t.equal(res.statusCode, 500, name)
      t.same(JSON.parse(res.body), BAD_UPSTREAM_REQUEST, `${name}: the contract's answer`)
    }
  }
  t.equal(up.connections(), 0, 'nothing reached the upstream')
  const errors = logsAt(logs, LEVEL.error, 'The upstream request is invalid')
  t.equal(errors.length, 8, 'each logged at error level')
  t.match(JSON.stringify(errors[0]), /transfer-encoding|invalid/i, "with undici's reason")
  t.equal(logsAt(logs, LEVEL.error, 'upstream request failed').length, 0, 'never as an upstream failure')
})
