// reply.pipe() over real sockets. The scenarios of the first table run over both paths:
// pipe(url), dispatched straight into the response, and fetch + pipe(res), a response the
// handler fetched first. Then what belongs to one path only: pipe(url)'s request forms and
// failures before any answer, and pipe(res) of a response in some particular state.
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import { Readable } from 'node:stream'
import t from 'tap'
import { Agent, request as undiciRequest } from 'undici'
import type { AsyncReply } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { openRequest, request, sleep, waitFor } from './helpers/client.js'
import type { Teardown, Test } from './helpers/context.js'
import { H2C, h2get, h2session } from './helpers/h2.js'
import { refusedOrigin, upstreamFor } from './helpers/upstream.js'

type Path = 'direct' | 'fetched'

/** Streams the answer of `url` into the reply, by one path or the other; never rejects on direct. */
async function relay (path: Path, reply: AsyncReply, url: string): Promise<void> {
  if (path === 'direct') return await reply.pipe(url)
  return await reply.pipe(await reply.fetch(url))
}

/** One scenario, run as two subtests: over pipe(url) and over fetch + pipe(res). */
function bothPaths (name: string, scenario: (t: Test, path: Path) => Promise<void>): void {
  for (const path of ['direct', 'fetched'] as const) {
    t.test(`${path === 'direct' ? 'pipe(url)' : 'fetch + pipe(res)'}: ${name}`, (t) => scenario(t, path))
  }
}

/** An upstream that writes these raw bytes as its whole answer, then closes. */
async function rawUpstream (test: Teardown, answer: string): Promise<string> {
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.end(answer))
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  test.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}/`
}

const UPSTREAM_ERROR = {
  statusCode: 502,
  code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR',
  error: 'Bad Gateway',
  message: 'The upstream request failed'
}

/** Hop-by-hop headers the upstream sets (the value names the header, so a leak is obvious). */
// (`trailer` and `transfer-encoding` are checked with a raw upstream: Node refuses to send them
// with a content-length.)
const HOP_HEADERS = ['keep-alive', 'proxy-connection', 'te', 'upgrade', 'proxy-authenticate', 'proxy-authorization']

// ---- both paths ----

bothPaths('the upstream status, end-to-end headers, content-length and body, without hop-by-hop headers', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.statusCode = 203
    res.setHeader('content-type', 'text/x-upstream')
    res.setHeader('x-kept', 'yes')
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    res.setHeader('connection', 'keep-alive, X-Named-Hop')
    res.setHeader('x-named-hop', 'must not pass')
    for (const name of HOP_HEADERS) res.setHeader(name, `upstream-${name}`)
    res.setHeader('content-length', 11)
    res.end('hello world')
  })
  let piped: unknown = 'pending'
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    piped = await relay(path, reply, up.url)
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 203, 'upstream status')
  t.ok(res.complete)
  t.equal(res.body, 'hello world', 'body intact')
  t.equal(res.headers['content-length'], '11', 'content-length passed through')
  t.equal(res.headers['transfer-encoding'], undefined, 'not chunked when the length is known')
  t.equal(res.headers['content-type'], 'text/x-upstream')
  t.equal(res.headers['x-kept'], 'yes', 'an ordinary header reaches the client')
  t.same(res.headers['set-cookie'], ['a=1', 'b=2'], 'multi-valued headers pass')
  t.equal(res.headers['x-named-hop'], undefined, 'a header named in the upstream connection header is dropped')
  for (const name of HOP_HEADERS) t.equal(res.headers[name], undefined, `${name} is dropped`)
  t.not(res.headers.connection, 'keep-alive, X-Named-Hop', 'the upstream connection header is not copied')
  await waitFor(() => piped !== 'pending', 2000, 'pipe to resolve')
  t.equal(piped, undefined, 'pipe resolved (with nothing)')
})

bothPaths('an upstream transfer-encoding is dropped and Node frames the body itself', async (t, path) => {
  // A raw upstream so the exact head is known: no connection header, an unusual
  // transfer-coding that would show if it were copied.
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\n' +
      'Transfer-Encoding: x-custom, chunked\r\n' +
      'X-Kept: raw\r\n' +
      'Upgrade: h2c\r\n' +
      'Trailer: X-Checksum\r\n' +
      '\r\n' +
      '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')
  })
  const { url } = await startRoute(t, {}, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.ok(res.complete)
  t.equal(res.body, 'hello world')
  t.equal(res.headers['x-kept'], 'raw')
  t.equal(res.headers['transfer-encoding'], 'chunked', 'Node\'s own framing, not the upstream\'s transfer-encoding')
  t.equal(res.headers.upgrade, undefined)
  t.equal(res.headers.trailer, undefined)
})

bothPaths('headers set by the handler replace the upstream ones, which replace those of onRequest hooks', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('x-from-hook', 'upstream')
    res.setHeader('x-from-handler', 'upstream')
    res.setHeader('x-only-upstream', 'upstream')
    res.end('body')
  })
  const { url } = await startApp(t, {}, (app) => {
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('x-from-hook', 'hook')
      reply.header('x-only-hook', 'hook')
    })
    asyncGet(app, '/', {
      async handler (_request, reply) {
        reply.header('x-from-handler', 'handler')
        await relay(path, reply, up.url)
      }
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'body')
  t.equal(res.headers['x-only-hook'], 'hook', 'hook headers are the base')
  t.equal(res.headers['x-from-hook'], 'upstream', 'the upstream replaces a hook header')
  t.equal(res.headers['x-from-handler'], 'handler', 'the handler replaces an upstream header')
  t.equal(res.headers['x-only-upstream'], 'upstream')
})

// The loopback sockets of the two hops (upstream -> plugin -> client) absorb about 8 MB between
// them on this machine (tcp_wmem max 4 MB each), so a 5 or 8 MiB body could be written by the
// upstream without any backpressure at all: the body must be well beyond that to show the stall.
bothPaths('a 32 MiB body streams with backpressure: a paused client stops the upstream, then gets every byte', async (t, path) => {
  const TOTAL = 32 * 1024 * 1024
  const CHUNK = 64 * 1024
  const source = randomBytes(TOTAL)
  const expected = createHash('sha256').update(source).digest('hex')
  let written = 0
  let blocked = false
  let finished = false
  let resumeUpstream: (() => void) | null = null
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', TOTAL)
    res.setHeader('content-type', 'application/octet-stream')
    const pump = (): void => {
      while (written < TOTAL) {
        const chunk = source.subarray(written, written + CHUNK)
        written += chunk.length
        if (!res.write(chunk)) {
          blocked = true
          resumeUpstream = pump
          res.once('drain', () => { resumeUpstream = null; pump() })
          return
        }
      }
      res.end(() => { finished = true })
    }
    pump()
  })
  let piped = false
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    await relay(path, reply, up.url)
    piped = true
  })
  const { res } = await openRequest(`${url}/`)
  // The client reads nothing: the response stays paused.
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-length'], String(TOTAL))
  await waitFor(() => blocked, 5000, 'the upstream to feel backpressure')
  // Let whatever buffers there are fill up, then check the upstream could not finish.
  let last = -1
  await waitFor(() => {
    const settled = written === last
    last = written
    return settled
  }, 5000, 'the upstream to stop writing')
  await sleep(100)
  t.ok(blocked, 'the upstream res.write() returned false')
  t.notOk(finished, 'the upstream could not finish while the client was paused')
  t.ok(written < TOTAL, `the upstream is stuck at ${written} of ${TOTAL} bytes`)
  t.ok(resumeUpstream !== null, 'the upstream is waiting for drain')
  t.notOk(piped, 'pipe() has not resolved yet')

  const hash = createHash('sha256')
  let received = 0
  const complete = await new Promise<boolean>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      received += chunk.length
      hash.update(chunk)
    })
    res.on('end', () => resolve(res.complete))
    res.on('error', () => resolve(false))
  })
  t.ok(complete, 'the response ended cleanly')
  t.equal(received, TOTAL, 'every byte arrived')
  t.equal(hash.digest('hex'), expected, 'the bytes are intact')
  await waitFor(() => finished && piped, 2000, 'the upstream to finish and pipe() to resolve')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 1, pending: 0 })
})

bothPaths('an upstream that dies mid-body cuts the client connection, never a clean end; pipe resolves', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 100_000)
    res.write(Buffer.alloc(10_000, 'a'), () => setTimeout(() => res.socket?.destroy(), 20))
  })
  let outcome = 'pending'
  const { url, app, logs } = await startRoute(t, {}, async (_request, reply) => {
    outcome = await relay(path, reply, up.url).then(() => 'resolved', () => 'rejected')
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200, 'the head had been sent')
  t.equal(res.headers['content-length'], '100000')
  t.notOk(res.complete, 'the client sees a truncated response')
  t.ok(res.body.length < 100_000, 'not the whole body')
  t.equal(res.body, 'a'.repeat(res.body.length), 'what arrived is the upstream body')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved', 'pipe resolves even then')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 0, failed: 1, rejected: 0, pending: 0 })
  const errors = logsAt(logs, LEVEL.error)
  t.equal(errors.length, 1, 'the upstream failure is logged')
  t.match(errors[0]?.err, { code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', stack: /caused by: SocketError/ })
})

bothPaths('an upstream that dies mid-body of a chunked response cuts the client connection', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.write('first part', () => setTimeout(() => res.socket?.destroy(), 20))
  })
  const { url } = await startRoute(t, {}, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'first part', 'what arrived was passed on')
  t.notOk(res.complete, 'but the response is cut, not ended')
})

bothPaths('HEAD gets the upstream head and no body, and the keep-alive connection stays usable', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 5)
    res.setHeader('x-kept', 'head')
    res.end('hello')
  })
  const { url, app } = await startRoute(t, {}, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`, { method: 'HEAD' })
  t.equal(res.statusCode, 200)
  t.ok(res.complete)
  t.equal(res.body, '', 'no body')
  t.equal(res.headers['x-kept'], 'head')
  t.equal(res.headers['content-length'], '5', 'the length the GET would have')
  // The same keep-alive connection still works afterwards: no stray body bytes were sent.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const head = await request(`${url}/`, { method: 'HEAD', agent })
  const get = await request(`${url}/`, { agent })
  t.equal(head.body, '')
  t.equal(get.body, 'hello')
  t.equal(app.asyncRoute.stats().finished, 3)
})

bothPaths('HEAD answers at once, without waiting for the upstream body', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.setHeader('x-kept', 'slow body')
    res.write('the rest never comes')
  })
  const { url, app } = await startRoute(t, { timeout: 3000 }, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`, { method: 'HEAD', timeout: 2000 })
  t.equal(res.statusCode, 200)
  t.ok(res.complete, 'a complete HEAD response')
  t.equal(res.headers['x-kept'], 'slow body')
  t.equal(res.headers['content-length'], '1000')
  t.equal(res.body, '')
  t.equal(app.asyncRoute.stats().finished, 1)
})

bothPaths('HEAD with a large upstream body stops reading it and keeps the server healthy', async (t, path) => {
  const big = Buffer.alloc(1024 * 1024, 'x')
  const up = await upstreamFor(t, (_req, res) => res.end(big))
  const { url, app } = await startRoute(t, {}, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`, { method: 'HEAD' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '')
  t.equal(res.headers['content-length'], String(big.length))
  await waitFor(() => app.asyncRoute.stats().finished === 1)
  t.equal((await request(`${url}/`)).body.length, big.length)
})

bothPaths('after the handler wrote a prefix, the upstream body is appended to the open response', async (t, path) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.statusCode = 404
    res.setHeader('x-upstream', 'late')
    res.end(' and upstream')
  })
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    reply.status(201).write('handler')
    await relay(path, reply, up.url)
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 201, 'the head was already out')
  t.equal(res.headers['x-upstream'], undefined)
  t.equal(res.body, 'handler and upstream')
  t.ok(res.complete)
})

bothPaths('a client leaving mid-pipe releases the upstream response and pipe resolves', async (t, path) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 10_000_000)
    res.on('close', () => { upstreamClosed = true })
    res.write(Buffer.alloc(1000))
  })
  let outcome = 'pending'
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    outcome = await relay(path, reply, up.url).then(() => 'resolved', () => 'rejected')
  })
  const { req, res } = await openRequest(`${url}/`)
  t.equal(res.statusCode, 200)
  req.destroy()
  await waitFor(() => outcome !== 'pending' && upstreamClosed, 2000, 'pipe to settle and the upstream to be released')
  t.equal(outcome, 'resolved')
  t.equal(app.asyncRoute.stats().aborted, 1)
})

bothPaths('the watchdog firing mid-pipe cuts the client and releases the upstream', async (t, path) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.on('close', () => { upstreamClosed = true })
    res.write('partial')
  })
  const { url, app } = await startRoute(t, { timeout: 150 }, (_request, reply) => relay(path, reply, up.url))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'partial')
  t.notOk(res.complete, 'cut, not ended')
  await waitFor(() => upstreamClosed, 2000, 'the upstream to be released')
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

bothPaths('finish() while a pipe streams ends the response there, reads the rest for the pool, and pipe resolves', async (t, path) => {
  let upstreamDone = false
  let sendRest: (() => void) | undefined
  const up = await upstreamFor(t, (req, res) => {
    if (req.url === '/whole') return res.end('whole')
    res.write('a'.repeat(1000))
    sendRest = () => res.end('b'.repeat(100_000), () => { upstreamDone = true })
  })
  let finishNow: (() => void) | undefined
  let outcome = 'pending'
  const { url, app, logs } = await startApp(t, {}, (app) => {
    asyncGet(app, '/', {
      async handler (_request, reply) {
        const piping = relay(path, reply, `${up.origin}/part`).then(() => 'resolved', () => 'rejected')
        finishNow = () => reply.finish('!')
        outcome = await piping
      }
    })
    app.asyncRoute({ method: 'GET', url: '/whole', handler: (_request, reply) => relay(path, reply, `${up.origin}/whole`) })
  })
  const { res } = await openRequest(`${url}/`)
  t.equal(res.statusCode, 200)
  let body = ''
  const ended = new Promise<boolean>((resolve) => {
    res.on('end', () => resolve(res.complete))
    res.on('error', () => resolve(false))
  })
  res.on('data', (chunk: Buffer) => { body += chunk.toString() })
  // finish() once the client has the upstream's first part: it ends the response there.
  await waitFor(() => body.length >= 1000, 2000, 'the first part to reach the client')
  finishNow?.()
  sendRest?.()
  t.ok(await ended, 'the response ended cleanly where finish() ended it')
  t.equal(body, `${'a'.repeat(1000)}!`, 'nothing of the upstream arrived after finish()')
  await waitFor(() => outcome !== 'pending' && upstreamDone, 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 1, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
  t.same(logs.filter((line) => line.level >= LEVEL.warn), [], 'nothing logged as a warning or an error')
  // The rest of the upstream body was read and its connection kept for reuse.
  t.equal((await request(`${url}/whole`)).body, 'whole')
  t.equal(up.connections(), 1, 'the pooled upstream connection was reused')
})

// HTTP/2 refuses connection-specific headers and statuses beyond 599: a head it cannot carry
// must become an error answer, never a rejected pipe() or a hanging reply.

bothPaths('HTTP/2: connection-specific upstream headers are dropped, http2-settings included', async (t, path) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\n' +
      'Connection: keep-alive, X-Named\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'Upgrade: h2c\r\n' +
      'HTTP2-Settings: AAMAAABkAAQAAP__\r\n' +
      'TE: gzip\r\n' +
      'X-Named: hop\r\n' +
      'X-Kept: yes\r\n' +
      'Transfer-Encoding: chunked\r\n' +
      '\r\n' +
      '2\r\nhi\r\n0\r\n\r\n')
  })
  let outcome = 'pending'
  const { url } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    outcome = await relay(path, reply, up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(h2session(t, url))
  t.equal(res.status, 200)
  t.equal(res.body, 'hi')
  t.equal(res.rstCode, 0, 'the stream ended normally')
  t.equal(res.headers['x-kept'], 'yes')
  t.equal(res.headers['x-named'], undefined)
  t.equal(res.headers['http2-settings'], undefined)
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

bothPaths('HTTP/2: an upstream status HTTP/2 cannot carry gives 502 and pipe resolves', async (t, path) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\nX-Upstream: leaked?\r\n\r\nhi')
  })
  let outcome = 'pending'
  const { url } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    outcome = await relay(path, reply, up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(h2session(t, url))
  t.equal(res.status, 502)
  t.same(JSON.parse(res.body), UPSTREAM_ERROR)
  t.equal(res.headers['x-upstream'], undefined, 'nothing of the refused head leaks into the error answer')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

bothPaths('HTTP/2: a repeated single-value upstream header gives 502 and pipe resolves', async (t, path) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nhi')
  })
  let outcome = 'pending'
  const { url, app } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    outcome = await relay(path, reply, up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(h2session(t, url))
  t.equal(res.status, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
  t.equal(app.asyncRoute.stats().failed, 1)
})

// ---- pipe(url) only: its request forms, and failures before any answer ----

t.test('pipe(url) performs the GET itself and streams the answer', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    res.setHeader('x-seen-method', String(req.method))
    res.end(`path ${req.url}`)
  })
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/string', {
      handler (_request, reply) {
        return reply.pipe(`${up.origin}/from-string?x=1`)
      }
    })
    asyncGet(app, '/url', {
      handler (_request, reply) {
        return reply.pipe(new URL('/from-url', up.origin))
      }
    })
  })
  const a = await request(`${url}/string`)
  t.equal(a.statusCode, 200)
  t.equal(a.body, 'path /from-string?x=1')
  t.equal(a.headers['x-seen-method'], 'GET')
  const b = await request(`${url}/url`)
  t.equal(b.body, 'path /from-url')
  t.equal(up.requests.length, 2)
})

t.test('pipe(url, options) and pipe({ url, method, headers, body }) send what they are given', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      res.statusCode = 202
      res.end(JSON.stringify({ method: req.method, url: req.url, header: req.headers['x-sent'], body: Buffer.concat(chunks).toString() }))
    })
  })
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/object', {
      handler (_request, reply) {
        return reply.pipe({ url: `${up.origin}/object`, method: 'POST', headers: { 'x-sent': 'object' }, body: 'object body' })
      }
    })
    asyncGet(app, '/options', {
      handler (_request, reply) {
        return reply.pipe(`${up.origin}/options`, { method: 'PATCH', headers: { 'x-sent': 'options' } })
      }
    })
  })
  const a = await request(`${url}/object`)
  t.equal(a.statusCode, 202)
  t.same(JSON.parse(a.body), { method: 'POST', url: '/object', header: 'object', body: 'object body' })
  const b = await request(`${url}/options`)
  t.equal(b.statusCode, 202)
  t.same(JSON.parse(b.body), { method: 'PATCH', url: '/options', header: 'options', body: '' })
})

t.test('pipe(url) with options request() alone understands takes the fetch path and behaves the same', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => { body += chunk.toString() })
    req.on('end', () => res.end(`${req.method ?? ''} ${body}`))
  })
  const refused = await refusedOrigin()
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/stream', handler (request, reply) { void reply.pipe(up.url, { method: 'POST', body: Readable.from(['streamed']) }) } })
    app.asyncRoute({ method: 'GET', url: '/object', handler (request, reply) { void reply.pipe({ url: up.url, method: 'PUT', body: Readable.from(['object']) }) } })
    app.asyncRoute({ method: 'GET', url: '/hwm', handler (request, reply) { void reply.pipe(up.url, { highWaterMark: 1024 }) } })
    app.asyncRoute({ method: 'GET', url: '/direct', handler (request, reply) { void reply.pipe({ url: new URL(up.url), method: 'POST', body: 'direct', query: { a: 1 }, headers: { 'x-a': '1' }, headersTimeout: 5000, bodyTimeout: 5000 }) } })
    app.asyncRoute({ method: 'GET', url: '/refused', handler (_request, reply) { void reply.pipe(`${refused}/`, { highWaterMark: 1024 }) } })
  })
  t.equal((await request(`${base}/stream`)).body, 'POST streamed')
  t.equal((await request(`${base}/object`)).body, 'PUT object')
  t.equal((await request(`${base}/hwm`)).body, 'GET ')
  t.equal((await request(`${base}/direct`)).body, 'POST direct')
  t.equal(up.requests[3]?.url, '/?a=1')
  t.equal((await request(`${base}/refused`)).statusCode, 502, 'a failing fetch on that path is a 502')
})

t.test('pipe(url) relays repeated headers, drops the ones `connection` names, and skips 1xx answers', async (t) => {
  const url = await rawUpstream(t, [
    'HTTP/1.1 103 Early Hints', 'link: </a.css>; rel=preload', '', '',
    'HTTP/1.1 200 OK',
    'set-cookie: a=1', 'set-cookie: b=2', 'set-cookie: c=3',
    'connection: x-named', 'Connection: close',
    'x-named: must not pass', 'x-kept: yes', '__proto__: ignored',
    'content-length: 5', '', 'hello'
  ].join('\r\n'))
  const { url: base } = await startRoute(t, {}, (request, reply) => { void reply.pipe(url) })
  const res = await request(`${base}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'hello')
  t.ok(res.complete)
  t.same(res.headers['set-cookie'], ['a=1', 'b=2', 'c=3'])
  t.equal(res.headers['x-kept'], 'yes')
  t.equal(res.headers['x-named'], undefined)
  t.equal(res.headers.link, undefined, 'the 103 head is not relayed')
  t.equal(res.headers['content-length'], '5')
})

t.test('pipe(res) also drops what `connection` names, and pipe(url) keeps the rest when it names nothing present', async (t) => {
  const named = await rawUpstream(t, 'HTTP/1.1 200 OK\r\nconnection: x-named, x-absent\r\nx-named: no\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok')
  const unnamed = await rawUpstream(t, 'HTTP/1.1 200 OK\r\nconnection: x-absent\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok')
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/named', async handler (request, reply) { await reply.pipe(await reply.fetch(named)) } })
    app.asyncRoute({ method: 'GET', url: '/unnamed', handler (request, reply) { void reply.pipe(unnamed) } })
  })
  const a = await request(`${base}/named`)
  t.equal(a.headers['x-named'], undefined)
  t.equal(a.headers['x-kept'], 'yes')
  const b = await request(`${base}/unnamed`)
  t.equal(b.headers['x-kept'], 'yes')
  t.equal(b.body, 'ok')
})

t.test('pipe(url) to a refused upstream resolves (never rejects) and the client gets 502', async (t) => {
  const refused = await refusedOrigin()
  const outcomes: string[] = []
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    outcomes.push(await reply.pipe(`${refused}/`).then(() => 'resolved', () => 'rejected'))
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.same(JSON.parse(res.body), UPSTREAM_ERROR)
  t.notOk(res.body.includes(new URL(refused).port), 'the answer does not name the upstream port')
  await waitFor(() => outcomes.length === 1, 2000, 'pipe to settle')
  t.same(outcomes, ['resolved'])
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('pipe(url) to an upstream that times out before its head gives 504', async (t) => {
  const up = await upstreamFor(t, () => {})
  const { url } = await startRoute(t, {}, (_request, reply) => reply.pipe(up.url, { headersTimeout: 100 }))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
})

t.test('pipe(url) failures found before anything is sent: bad URL, bad request options, a throwing dispatcher', async (t) => {
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/bad-url', handler (request, reply) { void reply.pipe('not a url') } })
    app.asyncRoute({ method: 'GET', url: '/bad-header', handler (request, reply) { void reply.pipe('http://127.0.0.1:1/', { headers: { 'bad header': 'x' } }) } })
  })
  const badUrl = await request(`${base}/bad-url`)
  t.equal(badUrl.statusCode, 500, '/bad-url')
  t.equal(JSON.parse(badUrl.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  // undici refuses the header before connecting: the caller's request is wrong, not an upstream.
  const badHeader = await request(`${base}/bad-header`)
  t.equal(badHeader.statusCode, 500, '/bad-header')
  t.equal(JSON.parse(badHeader.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  const dispatcher = { dispatch () { throw new Error('dispatcher exploded') } } as unknown as Agent
  const { url: other } = await startRoute(t, { dispatcher }, (request, reply) => { void reply.pipe('http://127.0.0.1:1/') })
  const res = await request(`${other}/`)
  t.equal(res.statusCode, 502)
})

t.test('pipe(url) on an ended reply, or ended before the upstream answered, resolves and logs at debug only', async (t) => {
  const up = await upstreamFor(t, (_req, res) => setTimeout(() => res.end('late'), 50))
  let piped = 0
  const { url: base, logs } = await startApp(t, {}, (app) => {
    asyncGet(app, '/after', {
      handler (request, reply) {
        reply.finish('first')
        void reply.pipe(up.url).then(() => { piped++ })
      }
    })
    asyncGet(app, '/during', {
      handler (request, reply) {
        void reply.pipe(up.url).then(() => { piped++ })
        reply.finish('finished first')
      }
    })
  })
  t.equal((await request(`${base}/after`)).body, 'first')
  t.equal((await request(`${base}/during`)).body, 'finished first')
  await waitFor(() => piped === 2, 2000, 'both pipes to resolve')
  t.equal(logsAt(logs, LEVEL.debug, 'already ended').length, 2)
  t.equal(logsAt(logs, LEVEL.warn).length, 0)
})

// ---- pipe(res) only: a response in some particular state ----

t.test('pipe(res) after the reply was finished resolves and releases the upstream body', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1_000_000)
    res.write(Buffer.alloc(1000))
  })
  let outcome = 'pending'
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish('answered first')
    outcome = await reply.pipe(res).then(() => 'resolved', () => 'rejected')
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'answered first')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
  await waitFor(() => up.openSockets() === 0, 2000, 'the upstream connection to be released')
})

t.test('pipe(res) of a response whose upstream died before pipe() was called gives 502 and resolves', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.write('abc', () => setTimeout(() => res.socket?.destroy(), 10))
  })
  let outcome = 'pending'
  const { url } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    // Other work happens meanwhile; the upstream dies during it.
    await new Promise((resolve) => res.body.once('close', resolve))
    outcome = await reply.pipe(res).then(() => 'resolved', () => 'rejected')
  })
  const started = Date.now()
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502, 'an error answer, not a hang until the watchdog')
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  t.ok(Date.now() - started < 2000, 'answered at once')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

t.test('pipe(res) of a response whose body was already read gives 500 and resolves', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('read once'))
  let outcome = 'pending'
  const { url } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    await res.body.text()
    outcome = await reply.pipe(res).then(() => 'resolved', () => 'rejected')
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.match(JSON.parse(res.body).message, /already read/)
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

t.test('pipe(res) passes on bodiless upstream answers (204, 304) even when piped later', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    res.statusCode = req.url === '/304' ? 304 : 204
    res.setHeader('x-status', String(res.statusCode))
    res.end()
  })
  const { url } = await startApp(t, { timeout: 3000 }, (app) => {
    app.asyncRoute<{ Params: { status: string } }>({
      method: 'GET',
      url: '/:status',
      async handler (request, reply) {
        const res = await reply.fetch(`${up.origin}/${request.params.status}`)
        await new Promise((resolve) => setTimeout(resolve, 20))
        await reply.pipe(res)
      }
    })
  })
  for (const status of [204, 304]) {
    const res = await request(`${url}/${status}`)
    t.equal(res.statusCode, status)
    t.equal(res.headers['x-status'], String(status))
    t.equal(res.body, '')
    t.ok(res.complete)
  }
})

t.test('pipe(res) of a response fetched without the plugin, then cut short by finish(): the rest is dropped, nothing throws', async (t) => {
  let sendRest: (() => void) | null = null
  let restSent = false
  const up = await upstreamFor(t, (_req, res) => {
    // Chunked (no content-length): the client sees a clean end after finish().
    res.write('first;')
    sendRest = () => {
      res.end('rest')
      restSent = true
    }
  })
  let finishNow: (() => void) | undefined
  let pipeDone = false
  const { url, app, logs } = await startRoute(t, {}, async (_request, reply) => {
    // undici's own request, not reply.fetch(): the plugin does not track this body.
    const res = await undiciRequest(up.url)
    const piping = reply.pipe(res)
    finishNow = () => {
      reply.finish()
      sendRest?.()
    }
    await piping
    pipeDone = true
  })
  const { res } = await openRequest(`${url}/`)
  t.equal(res.statusCode, 200)
  let body = ''
  const ended = new Promise<boolean>((resolve) => {
    res.on('end', () => resolve(res.complete))
    res.on('error', () => resolve(false))
  })
  res.on('data', (chunk: Buffer) => { body += chunk.toString() })
  await waitFor(() => body === 'first;', 2000, 'the first part to reach the client')
  finishNow?.()
  t.ok(await ended, 'and it ended cleanly')
  t.equal(body, 'first;', 'the response ends at finish(): what came after is not written')
  await waitFor(() => restSent && pipeDone, 2000, 'the upstream to end and pipe() to resolve')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 1, failed: 0, rejected: 0, pending: 0 })
  t.same(logs.filter((line) => line.level >= 40), [], 'nothing was logged as a warning or an error')
})

t.test('pipe(url) through a dispatcher that reports a failure twice: one 502, the second report ignored', async (t) => {
  // undici reports exactly one end per request; a dispatcher of one's own may not.
  const dispatcher = {
    dispatch (_options: unknown, handler: { onResponseError: (controller: unknown, error: Error) => void }) {
      setImmediate(() => {
        handler.onResponseError(null, Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))
        handler.onResponseError(null, new Error('reported again'))
      })
      return true
    }
  } as unknown as Agent
  const { url, app, logs } = await startRoute(t, { dispatcher }, (_request, reply) => reply.pipe('http://127.0.0.1:1/'))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  await sleep(20)
  t.match(app.asyncRoute.stats(), { started: 1, failed: 1, pending: 0 })
  t.equal(logs.filter((line) => line.level >= LEVEL.error).length, 1, 'one error answer logged')
  t.equal(logsAt(logs, LEVEL.debug, 'already ended').length, 0, 'the second report never reached the reply')
})
