// reply.pipe(): status, headers without the hop-by-hop ones, content-length and body of a real
// upstream; pipe(url) and pipe(request options); backpressure on a 5 MiB body; an upstream
// that dies mid-body; HEAD; pipe never rejecting.
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import t from 'tap'
import { LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { openRequest, request, sleep, waitFor } from './helpers/client.js'
import { refusedOrigin, upstreamFor } from './helpers/upstream.js'

// The subtest type: the last overload of t.test takes only the callback.
type Test = Parameters<Parameters<typeof t.test>[0]>[0]

interface H2Response { status: number, headers: http2.IncomingHttpHeaders, body: string, rstCode: number }

/** Fastify over cleartext HTTP/2 (startApp's options are typed for HTTP/1). */
const H2C = { http2: true } as unknown as FastifyServerOptions

/** One GET over a new HTTP/2 (h2c) session; rejects after 5 s. */
function h2get (test: Test, url: string): Promise<H2Response> {
  const session = http2.connect(url)
  session.on('error', () => {})
  test.teardown(() => session.close())
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/' })
    let headers: http2.IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    const timer = setTimeout(() => reject(new Error('no HTTP/2 response within 5000 ms')), 5000)
    req.on('response', (h) => { headers = h })
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('error', () => {})
    req.on('close', () => {
      clearTimeout(timer)
      resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks).toString(), rstCode: req.rstCode ?? 0 })
    })
    req.end()
  })
}

/** Hop-by-hop headers the upstream sets (the value names the header, so a leak is obvious). */
// (`trailer` and `transfer-encoding` are checked with a raw upstream: Node refuses to send them
// with a content-length.)
const HOP_HEADERS = ['keep-alive', 'proxy-connection', 'te', 'upgrade', 'proxy-authenticate', 'proxy-authorization']

t.test('pipe(res) sends the upstream status, end-to-end headers, content-length and body, without hop-by-hop headers', async (t) => {
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
    const res = await reply.fetch(up.url)
    piped = await reply.pipe(res)
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
  t.equal(piped, undefined, 'pipe resolved (with nothing)')
})

t.test('pipe drops an upstream transfer-encoding and lets Node frame the body itself', async (t) => {
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
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    await reply.pipe(up.url)
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.ok(res.complete)
  t.equal(res.body, 'hello world')
  t.equal(res.headers['x-kept'], 'raw')
  t.equal(res.headers['transfer-encoding'], 'chunked', 'Node\'s own framing, not the upstream\'s transfer-encoding')
  t.equal(res.headers.upgrade, undefined)
  t.equal(res.headers.trailer, undefined)
})

t.test('headers set by the handler replace the upstream ones, which replace those of onRequest hooks', async (t) => {
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
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        reply.header('x-from-handler', 'handler')
        await reply.pipe(await reply.fetch(up.url))
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

t.test('pipe(url) performs the GET itself and streams the answer', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    res.setHeader('x-seen-method', String(req.method))
    res.end(`path ${req.url}`)
  })
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/string',
      handler (_request, reply) {
        return reply.pipe(`${up.origin}/from-string?x=1`)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/url',
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
    app.asyncRoute({
      method: 'GET',
      url: '/object',
      handler (_request, reply) {
        return reply.pipe({ url: `${up.origin}/object`, method: 'POST', headers: { 'x-sent': 'object' }, body: 'object body' })
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/options',
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

t.test('pipe to a refused upstream resolves (never rejects) and the client gets 502', async (t) => {
  const refused = await refusedOrigin()
  const outcomes: string[] = []
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    outcomes.push(await reply.pipe(`${refused}/`).then(() => 'resolved', () => 'rejected'))
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.same(JSON.parse(res.body), {
    statusCode: 502,
    code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR',
    error: 'Bad Gateway',
    message: 'The upstream request failed'
  })
  t.notOk(res.body.includes(new URL(refused).port), 'the answer does not name the upstream port')
  await waitFor(() => outcomes.length === 1, 2000, 'pipe to settle')
  t.same(outcomes, ['resolved'])
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('pipe to an upstream that times out before its head gives 504', async (t) => {
  const up = await upstreamFor(t, () => {})
  const { url } = await startRoute(t, {}, (_request, reply) => reply.pipe(up.url, { headersTimeout: 100 }))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
})

// The loopback sockets of the two hops (upstream -> plugin -> client) absorb about 8 MB between
// them on this machine (tcp_wmem max 4 MB each), so 5 MiB could be written by the upstream
// without any backpressure at all: the body must be well beyond that to show the stall.
t.test('a large body (32 MiB) streams with backpressure: a paused client stops the upstream, then gets every byte', async (t) => {
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
  const { url } = await startRoute(t, {}, (_request, reply) => reply.pipe(up.url))
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

  const hash = createHash('sha256')
  let received = 0
  const done = new Promise<boolean>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      received += chunk.length
      hash.update(chunk)
    })
    res.on('end', () => resolve(res.complete))
    res.on('error', () => resolve(false))
  })
  const complete = await done
  t.ok(complete, 'the response ended cleanly')
  t.equal(received, TOTAL, 'every byte arrived')
  t.equal(hash.digest('hex'), expected, 'the bytes are intact')
  await waitFor(() => finished, 2000, 'the upstream to finish')
})

t.test('an upstream that dies mid-body cuts the client connection, never a clean end', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 100_000)
    res.write(Buffer.alloc(10_000, 'a'), () => setTimeout(() => res.socket?.destroy(), 20))
  })
  let outcome = 'pending'
  const { url, app, logs } = await startRoute(t, {}, async (_request, reply) => {
    outcome = await reply.pipe(up.url).then(() => 'resolved', () => 'rejected')
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200, 'the head had been sent')
  t.equal(res.headers['content-length'], '100000')
  t.notOk(res.complete, 'the client sees a truncated response')
  t.ok(res.body.length < 100_000, 'not the whole body')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved', 'pipe resolves even then')
  t.equal(app.asyncRoute.stats().failed, 1)
  const errors = logsAt(logs, LEVEL.error)
  t.equal(errors.length, 1, 'the upstream failure is logged')
  t.match(errors[0]?.err, { code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', stack: /caused by: SocketError/ })
})

t.test('an upstream that dies mid-body of a chunked response cuts the client connection', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.write('first part', () => setTimeout(() => res.socket?.destroy(), 20))
  })
  const { url } = await startRoute(t, {}, (_request, reply) => reply.pipe(up.url))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'first part', 'what arrived was passed on')
  t.notOk(res.complete, 'but the response is cut, not ended')
})

t.test('HEAD through a pipe route gets the upstream head and no body', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 5)
    res.setHeader('x-kept', 'head')
    res.end('hello')
  })
  const { url, app } = await startRoute(t, {}, (_request, reply) => reply.pipe(up.url))
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

t.test('pipe after the handler wrote a prefix appends the upstream body to the open response', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.statusCode = 404
    res.setHeader('x-upstream', 'late')
    res.end(' and upstream')
  })
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    reply.status(201).write('handler')
    await reply.pipe(up.url)
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 201, 'the head was already out')
  t.equal(res.headers['x-upstream'], undefined)
  t.equal(res.body, 'handler and upstream')
  t.ok(res.complete)
})

t.test('pipe of a response after the reply was finished resolves and releases the upstream body', async (t) => {
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

t.test('a client leaving mid-pipe releases the upstream response and pipe resolves', async (t) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 10_000_000)
    res.on('close', () => { upstreamClosed = true })
    res.write(Buffer.alloc(1000))
  })
  let outcome = 'pending'
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    outcome = await reply.pipe(up.url).then(() => 'resolved', () => 'rejected')
  })
  const { req, res } = await openRequest(`${url}/`)
  t.equal(res.statusCode, 200)
  req.destroy()
  await waitFor(() => outcome !== 'pending' && upstreamClosed, 2000, 'pipe to settle and the upstream to be released')
  t.equal(outcome, 'resolved')
  t.equal(app.asyncRoute.stats().aborted, 1)
})

t.test('the watchdog firing mid-pipe cuts the client and releases the upstream', async (t) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.on('close', () => { upstreamClosed = true })
    res.write('partial')
  })
  const { url, app } = await startRoute(t, { timeout: 150 }, (_request, reply) => reply.pipe(up.url))
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'partial')
  t.notOk(res.complete, 'cut, not ended')
  await waitFor(() => upstreamClosed, 2000, 'the upstream to be released')
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

t.test('a pipe that completes while the app is closing ends its keep-alive connection', async (t) => {
  let finishUpstream!: () => void
  let arrived!: () => void
  const arrival = new Promise<void>((resolve) => { arrived = resolve })
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 10)
    res.write('01234')
    finishUpstream = () => res.end('56789')
    arrived()
  })
  const { url, app } = await startRoute(t, { closeGrace: 5000 }, (_request, reply) => reply.pipe(up.url))
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const pending = request(`${url}/`, { agent, timeout: 5000 })
  await arrival
  await waitFor(() => app.asyncRoute.pending().length === 1 && app.asyncRoute.pending()[0]?.headersSent === true, 2000, 'the head to be sent')
  const started = Date.now()
  const closing = app.close()
  await sleep(50)
  finishUpstream()
  const res = await pending
  t.ok(res.complete)
  t.equal(res.body, '0123456789')
  await closing
  t.ok(Date.now() - started < 3000, 'close() did not wait for the keep-alive timeout')
})

t.test('finish() called while a pipe is still streaming ends the response there, without crashing, and pipe resolves', async (t) => {
  let upstreamDone = false
  const up = await upstreamFor(t, (_req, res) => {
    res.write('a'.repeat(1000))
    setTimeout(() => res.end('b'.repeat(100_000), () => { upstreamDone = true }), 50)
  })
  let outcome = 'pending'
  const { url, app, logs } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    const piping = reply.pipe(res).then(() => 'resolved', () => 'rejected')
    reply.finish('!')
    outcome = await piping
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.ok(res.complete, 'the response ended cleanly where finish() ended it')
  t.notOk(res.body.includes('b'), 'nothing of the upstream arrived after finish()')
  t.ok(res.body.endsWith('!'))
  await waitFor(() => outcome !== 'pending' && upstreamDone, 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 1, timedOut: 0, aborted: 0, failed: 0, pending: 0 })
  t.same(logsAt(logs, LEVEL.error), [], 'nothing logged at error level')
  // The rest of the upstream body was read and its connection kept for reuse.
  t.equal((await request(`${url}/`)).statusCode, 200)
  t.equal(up.connections(), 1, 'the pooled upstream connection was reused')
})

t.test('pipe of a response whose upstream died before pipe() was called gives 502 and resolves', async (t) => {
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

t.test('pipe of a response whose body was already read gives 500 and resolves', async (t) => {
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

// HTTP/2 refuses connection-specific headers and statuses beyond 599: a head it cannot carry
// must become an error answer, never a rejected pipe() or a hanging reply.

t.test('HTTP/2: pipe drops connection-specific upstream headers, http2-settings included', async (t) => {
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
    outcome = await reply.pipe(up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(t, url)
  t.equal(res.status, 200)
  t.equal(res.body, 'hi')
  t.equal(res.rstCode, 0, 'the stream ended normally')
  t.equal(res.headers['x-kept'], 'yes')
  t.equal(res.headers['x-named'], undefined)
  t.equal(res.headers['http2-settings'], undefined)
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

t.test('HTTP/2: an upstream status HTTP/2 cannot carry gives 502 and pipe resolves', async (t) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\nX-Upstream: leaked?\r\n\r\nhi')
  })
  let outcome = 'pending'
  const { url } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    outcome = await reply.pipe(up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(t, url)
  t.equal(res.status, 502)
  t.same(JSON.parse(res.body), {
    statusCode: 502,
    code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR',
    error: 'Bad Gateway',
    message: 'The upstream request failed'
  })
  t.equal(res.headers['x-upstream'], undefined, 'nothing of the refused head leaks into the error answer')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
})

t.test('HTTP/2: a repeated single-value upstream header gives 502 and pipe resolves', async (t) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nhi')
  })
  let outcome = 'pending'
  const { url, app } = await startRoute(t, { timeout: 3000 }, async (_request, reply) => {
    outcome = await reply.pipe(up.url).then(() => 'resolved', () => 'rejected')
  }, H2C)
  const res = await h2get(t, url)
  t.equal(res.status, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  await waitFor(() => outcome !== 'pending', 2000, 'pipe to settle')
  t.equal(outcome, 'resolved')
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('HEAD through a pipe route answers at once, without waiting for the upstream body', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.setHeader('x-kept', 'slow body')
    res.write('the rest never comes')
  })
  const { url, app } = await startRoute(t, { timeout: 3000 }, (_request, reply) => reply.pipe(up.url))
  const res = await request(`${url}/`, { method: 'HEAD', timeout: 2000 })
  t.equal(res.statusCode, 200)
  t.ok(res.complete, 'a complete HEAD response')
  t.equal(res.headers['x-kept'], 'slow body')
  t.equal(res.headers['content-length'], '1000')
  t.equal(res.body, '')
  t.equal(app.asyncRoute.stats().finished, 1)
})

t.test('pipe passes on bodiless upstream answers (204, 304) even when piped later', async (t) => {
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
