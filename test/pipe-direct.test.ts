// reply.pipe(url) is dispatched straight into the response (no fetch, no Readable): the cases
// that path handles itself. What it shares with pipe(res) (hop-by-hop headers, HEAD,
// backpressure, mid-body errors, cancellation) is checked in pipe.test.ts for both forms.
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { Readable } from 'node:stream'
import type { FastifyServerOptions } from 'fastify'
import t from 'tap'
import { Agent } from 'undici'
import { LEVEL, logsAt, startApp } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { refusedOrigin, upstreamFor } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

/** An upstream that writes these raw bytes as its whole answer, then closes. */
async function rawUpstream (test: Test, answer: string): Promise<string> {
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.end(answer))
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  test.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as { port: number }).port}/`
}

t.test('pipe(url) relays repeated headers, drops the ones `connection` names, and skips 1xx answers', async (t) => {
  const url = await rawUpstream(t, [
    'HTTP/1.1 103 Early Hints', 'link: </a.css>; rel=preload', '', '',
    'HTTP/1.1 200 OK',
    'set-cookie: a=1', 'set-cookie: b=2', 'set-cookie: c=3',
    'connection: x-named', 'Connection: close',
    'x-named: must not pass', 'x-kept: yes', '__proto__: ignored',
    'content-length: 5', '', 'hello'
  ].join('\r\n'))
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler (request, reply) { void reply.pipe(url) } })
  })
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

t.test('pipe(res) also drops what `connection` names, and keeps the rest when it names nothing present', async (t) => {
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

t.test('pipe(url) with options request() alone understands takes the fetch path and behaves the same', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => { body += chunk.toString() })
    req.on('end', () => res.end(`${req.method ?? ''} ${body}`))
  })
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/stream', handler (request, reply) { void reply.pipe(up.url, { method: 'POST', body: Readable.from(['streamed']) }) } })
    app.asyncRoute({ method: 'GET', url: '/object', handler (request, reply) { void reply.pipe({ url: up.url, method: 'PUT', body: Readable.from(['object']) }) } })
    app.asyncRoute({ method: 'GET', url: '/hwm', handler (request, reply) { void reply.pipe(up.url, { highWaterMark: 1024 }) } })
    app.asyncRoute({ method: 'GET', url: '/direct', handler (request, reply) { void reply.pipe({ url: new URL(up.url), method: 'POST', body: 'direct', query: { a: 1 }, headers: { 'x-a': '1' }, headersTimeout: 5000, bodyTimeout: 5000 }) } })
  })
  t.equal((await request(`${base}/stream`)).body, 'POST streamed')
  t.equal((await request(`${base}/object`)).body, 'PUT object')
  t.equal((await request(`${base}/hwm`)).body, 'GET ')
  t.equal((await request(`${base}/direct`)).body, 'POST direct')
  t.equal(up.requests[3]?.url, '/?a=1')
})

t.test('pipe(url) failures found before anything is sent: bad URL, bad request options, a throwing dispatcher', async (t) => {
  const throwing = new Agent()
  t.teardown(() => throwing.close())
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/bad-url', handler (request, reply) { void reply.pipe('not a url') } })
    app.asyncRoute({ method: 'GET', url: '/bad-header', handler (request, reply) { void reply.pipe('http://127.0.0.1:1/', { headers: { 'bad header': 'x' } }) } })
  })
  const badUrl = await request(`${base}/bad-url`)
  t.equal(badUrl.statusCode, 502, '/bad-url')
  t.equal(JSON.parse(badUrl.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  // undici refuses the header before connecting: the caller's request is wrong, not an upstream.
  const badHeader = await request(`${base}/bad-header`)
  t.equal(badHeader.statusCode, 500, '/bad-header')
  t.equal(JSON.parse(badHeader.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  const dispatcher = { dispatch () { throw new Error('dispatcher exploded') } } as unknown as Agent
  const { url: other } = await startApp(t, { dispatcher }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler (request, reply) { void reply.pipe('http://127.0.0.1:1/') } })
  })
  const res = await request(`${other}/`)
  t.equal(res.statusCode, 502)
})

t.test('pipe(url) on an ended reply, or ended before the upstream answered, resolves and logs at debug only', async (t) => {
  const up = await upstreamFor(t, (_req, res) => setTimeout(() => res.end('late'), 50))
  let piped = 0
  const { url: base, logs } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/after',
      handler (request, reply) {
        reply.finish('first')
        void reply.pipe(up.url).then(() => { piped++ })
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/during',
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

t.test('HEAD through pipe(url) with a large upstream body stops reading it and keeps the server healthy', async (t) => {
  const big = Buffer.alloc(1024 * 1024, 'x')
  const up = await upstreamFor(t, (_req, res) => res.end(big))
  const { url: base, app } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler (request, reply) { void reply.pipe(up.url) } })
  })
  const res = await request(`${base}/`, { method: 'HEAD' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '')
  t.equal(res.headers['content-length'], String(big.length))
  await waitFor(() => app.asyncRoute.stats().finished === 1)
  t.equal((await request(`${base}/`)).body.length, big.length)
})

t.test('an upstream head HTTP/2 cannot carry is a 502 with pipe(url) and with pipe(res)', async (t) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\nX-Upstream: leaked?\r\n\r\nhi')
  })
  const outcomes: string[] = []
  const { url } = await startApp(t, { timeout: 3000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/direct', async handler (_request, reply) { outcomes.push(await reply.pipe(up.url).then(() => 'resolved')) } })
    app.asyncRoute({ method: 'GET', url: '/fetched', async handler (_request, reply) { outcomes.push(await reply.pipe(await reply.fetch(up.url)).then(() => 'resolved')) } })
  }, { http2: true } as unknown as FastifyServerOptions)
  const session = http2.connect(url)
  session.on('error', () => {})
  t.teardown(() => session.close())
  for (const path of ['/direct', '/fetched']) {
    const res = await new Promise<{ status: number, body: string, headers: http2.IncomingHttpHeaders }>((resolve) => {
      const req = session.request({ ':path': path })
      let headers: http2.IncomingHttpHeaders = {}
      let body = ''
      req.on('response', (h) => { headers = h })
      req.on('data', (chunk: Buffer) => { body += chunk.toString() })
      req.on('close', () => resolve({ status: Number(headers[':status']), body, headers }))
      req.end()
    })
    t.equal(res.status, 502, path)
    t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
    t.equal(res.headers['x-upstream'], undefined)
  }
  await waitFor(() => outcomes.length === 2, 2000, 'both pipes to resolve')
})

t.test('pipe(res) on HEAD, and a failing fetch on the fetch path of pipe(url)', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.setHeader('x-kept', 'yes'); res.end('body') })
  const refused = await refusedOrigin()
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/head', async handler (_request, reply) { await reply.pipe(await reply.fetch(up.url)) } })
    app.asyncRoute({ method: 'GET', url: '/refused', handler (_request, reply) { void reply.pipe(`${refused}/`, { highWaterMark: 1024 }) } })
  })
  const head = await request(`${base}/head`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['x-kept'], 'yes')
  t.equal(head.body, '')
  const res = await request(`${base}/refused`)
  t.equal(res.statusCode, 502)
})

t.test('finish() while pipe(url) streams keeps the handler response and reads the rest for the pool', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.write('part one;')
    setTimeout(() => res.end('part two'), 100)
  })
  let resolved = false
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      handler (request, reply) {
        void reply.pipe(up.url).then(() => { resolved = true })
        setTimeout(() => reply.finish(), 50)
      }
    })
  })
  const res = await request(`${base}/`)
  t.equal(res.body, 'part one;')
  t.ok(res.complete)
  await waitFor(() => resolved, 2000, 'pipe() to resolve')
})

t.test('pipe(url) with a slow client: backpressure pauses the upstream and the body arrives whole', async (t) => {
  const big = Buffer.alloc(8 * 1024 * 1024, 'y')
  const up = await upstreamFor(t, (_req, res) => res.end(big))
  const { url: base } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler (request, reply) { void reply.pipe(up.url) } })
  })
  const length = await new Promise<number>((resolve, reject) => {
    http.get(`${base}/`, (res) => {
      let total = 0
      res.pause()
      setTimeout(() => {
        res.on('data', (chunk: Buffer) => { total += chunk.length })
        res.on('end', () => resolve(total))
        res.resume()
      }, 200)
    }).on('error', reject)
  })
  t.equal(length, big.length)
})
