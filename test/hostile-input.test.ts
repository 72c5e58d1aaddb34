// What a hostile client or upstream controls, tried as an attacker would, over real sockets:
// dot segments smuggled through decoded route parameters and query values, redirects past
// allowedOrigins, retry-after values past a timer's range, statuses outside 100–599, URLs that
// are not http(s), a spoofed x-forwarded-for, oversized and undelivered uploads.
import { mkdtempSync, readFileSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import t from 'tap'
import * as undici7 from 'undici'
import { hasDotSegment, splitUrl } from '../plugin/target.js'
import asyncRoute from '../plugin/index.js'
import type { AsyncReply, AsyncRoutePluginOptions } from '../plugin/index.js'
import { asyncGet, closeTimed, LEVEL, logsAt, startApp } from './helpers/app.js'
import { rawExchange, request, waitFor } from './helpers/client.js'
import { H2C, h2get, h2session } from './helpers/h2.js'
import { undici8Supported } from './helpers/dispatchers.js'
import { readBody, refusedOrigin, upstreamFor, type Upstream } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

/** An upstream that records the paths it was asked for and answers with the path. */
async function pathUpstream (t: Test): Promise<Upstream & { paths: string[] }> {
  const paths: string[] = []
  const up = await upstreamFor(t, (req, res) => {
    paths.push(String(req.url))
    res.end(`path ${String(req.url)}`)
  })
  return Object.assign(up, { paths })
}

// ---- path traversal through decoded parameters ----

/**
 * Encodings of a dot segment that a decoded route parameter or query value can carry: the URL
 * parser removes tab, LF and CR anywhere and C0 controls and spaces at the ends before it
 * resolves `..`.
 */
const TRAVERSALS = [
  '.%09./secret', '.%0a./secret', '.%0d./secret', '..%20', '..%00', '..%1f',
  '..%2fsecret', '%2e%2e/secret', '.%2e/secret', '%2E./secret', '..%5csecret', '..%09',
  'a/../../secret', './secret'
]

/** A gateway of each upstream path that appends a route parameter or a query value to a prefix. */
function gateway (app: FastifyInstance, base: string): void {
  const target = (param: string): string => `${base}/public/${param}`
  const handlers: Record<string, (url: string, reply: AsyncReply) => Promise<void>> = {
    forward: (url, reply) => reply.forward(url),
    pipe: (url, reply) => reply.pipe(url),
    fetch: async (url, reply) => {
      const res = await reply.fetch(url)
      await reply.pipe(res)
    }
  }
  for (const [name, handle] of Object.entries(handlers)) {
    app.asyncRoute({ method: 'GET', url: `/${name}/*`, handler: (request, reply) => handle(target((request.params as Record<string, string>)['*']), reply) })
    app.asyncRoute({ method: 'GET', url: `/${name}-query`, handler: (request, reply) => handle(target((request.query as Record<string, string>).file), reply) })
  }
  asyncGet(app, '/upstream/*', {
    upstream: (request) => target((request.params as Record<string, string>)['*']),
    handler: (_request, reply, res) => reply.pipe(res)
  })
}

/** A GET of `path` exactly as given (a URL string would be resolved by the client first). */
function getPath (base: string, path: string): Promise<{ statusCode: number, body: string }> {
  const { port } = new URL(base)
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
    }).on('error', reject)
  })
}

t.test('a dot segment from a decoded route parameter or query value is refused with 400 BAD_PATH on every path', async (t) => {
  const up = await pathUpstream(t)
  const { url } = await startApp(t, {}, (app) => gateway(app, up.url))
  for (const name of ['forward', 'pipe', 'fetch', 'upstream']) {
    for (const attack of TRAVERSALS) {
      const res = await getPath(url, `/${name}/${attack}`)
      t.equal(res.statusCode, 400, `${name} /${attack}`)
      t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_BAD_PATH', `${name} /${attack}`)
      if (name === 'upstream') continue
      const query = await getPath(url, `/${name}-query?file=${attack}`)
      t.equal(query.statusCode, 400, `${name} ?file=${attack}`)
    }
  }
  t.same(up.paths, [], 'the upstream was never asked')
  // What is not a dot segment passes.
  for (const name of ['forward', 'pipe', 'fetch', 'upstream']) {
    for (const safe of ['.well-known/x', 'a..b', '...', 'a.b/c.d', '..a', 'x?y=/../z', '%20..']) {
      const res = await getPath(url, `/${name}/${safe}`)
      t.equal(res.statusCode, 200, `${name} /${safe}`)
    }
  }
})

t.test('hasDotSegment sees the string as the URL parser does', async (t) => {
  for (const url of ['http://h/p/.\t./x', 'http://h/p/.\n./x', 'http://h/p/.\r./x', 'http://h/p/..\u0000', 'http://h/p/.. ',
    'http://h/p/..\u001f', ' http://h/p/..', 'http://h/p/%2e%2E/x', 'http:\\\\h\\p\\..\\x', 'http:h/..', 'http://h/a/..%2F',
    'http://h/a/.%5cx', 'http://h/..', 'http://h/.']) {
    t.ok(hasDotSegment(url), JSON.stringify(url))
    // What the parser makes of it: the path walked up (or stayed at the root).
    t.notMatch(new URL(url).pathname, /\/p\/\.\.?\//, JSON.stringify(url))
  }
  for (const url of ['http://h/.well-known/x', 'http://h/a..b', 'http://h/...', 'http://h/a?x=/../', 'http://h/a#/../', 'http://h/a%2e', 'http://h..x/a', 'http://h/']) {
    t.notOk(hasDotSegment(url), JSON.stringify(url))
  }
})

// ---- redirects past allowedOrigins ----

t.test('allowedOrigins holds for redirects: a dispatcher composed with the redirect interceptor relays the 3xx', async (t) => {
  const internal = await pathUpstream(t)
  const allowed = await upstreamFor(t, (req, res) => {
    res.writeHead(302, { location: `${internal.url}/admin` }).end()
  })
  const majors: Array<[string, typeof undici7]> = [['undici 7', undici7]]
  if (undici8Supported()) majors.push(['undici 8', (await import('undici8')) as unknown as typeof undici7])
  for (const [major, undici] of majors) {
    const dispatcher = new undici.Agent().compose(undici.interceptors.redirect({ maxRedirections: 3 }))
    t.teardown(() => dispatcher.close())
    const { url } = await startApp(t, { allowedOrigins: [allowed.url], dispatcher } as AsyncRoutePluginOptions, (app) => {
      app.asyncRoute({ method: 'GET', url: '/fetch', handler: async (_request, reply) => { const res = await reply.fetch(`${allowed.url}/`); await res.body.dump(); reply.finish({ status: res.statusCode }) } })
      app.asyncRoute({ method: 'GET', url: '/pipe', handler: (_request, reply) => reply.pipe(`${allowed.url}/`) })
      app.asyncRoute({ method: 'GET', url: '/forward', handler: (_request, reply) => reply.forward(`${allowed.url}/`) })
      app.asyncRoute({ method: 'GET', url: '/upstream', upstream: `${allowed.url}/`, handler: (_request, reply, res) => reply.pipe(res) })
    })
    t.same(JSON.parse((await request(`${url}/fetch`)).body), { status: 302 }, `${major} fetch returns the 3xx`)
    for (const path of ['/pipe', '/forward', '/upstream']) {
      const res = await request(`${url}${path}`)
      t.equal(res.statusCode, 302, `${major} ${path} relays the 3xx`)
      t.equal(res.headers.location, `${internal.url}/admin`)
    }
  }
  t.same(internal.paths, [], 'the internal origin was never reached')
})

// ---- retries, statuses, URLs ----

t.test('a retry-after past a timer\'s range is never waited for: the answer is relayed, no TimeoutOverflowWarning', async (t) => {
  let tries = 0
  const up = await upstreamFor(t, (req, res) => {
    tries++
    res.writeHead(503, { 'retry-after': String(30 * 24 * 3600) }).end('busy')
  })
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning.name) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const { url } = await startApp(t, { timeout: 0, retry: { attempts: 3 } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/pipe', handler: (_request, reply) => reply.pipe(up.url) })
    app.asyncRoute({ method: 'GET', url: '/fetch', handler: async (_request, reply) => reply.pipe(await reply.fetch(up.url)) })
  })
  for (const path of ['/pipe', '/fetch']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 503, path)
    t.equal(res.body, 'busy', path)
  }
  t.equal(tries, 2, 'one try each')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(warnings, [], 'no timer overflowed')
})

t.test('an upstream status outside 100-599 is a bad response: 502 UPSTREAM_ERROR, nothing of its head relayed', async (t) => {
  for (const status of [600, 999]) {
    const up = await upstreamFor(t, (req) => {
      req.socket.write(`HTTP/1.1 ${status} Beyond\r\nContent-Length: 2\r\nX-Upstream: leaked?\r\n\r\nhi`)
    })
    const { url } = await startApp(t, {}, (app) => {
      app.asyncRoute({ method: 'GET', url: '/pipe', handler: (_request, reply) => reply.pipe(up.url) })
      app.asyncRoute({ method: 'GET', url: '/forward', handler: (_request, reply) => reply.forward(up.url) })
      app.asyncRoute({ method: 'GET', url: '/pipe-res', handler: async (_request, reply) => reply.pipe(await reply.fetch(up.url)) })
    })
    for (const path of ['/pipe', '/forward', '/pipe-res']) {
      const res = await request(`${url}${path}`)
      t.equal(res.statusCode, 502, `${status} ${path}`)
      t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
      t.equal(res.headers['x-upstream'], undefined)
    }
  }
})

t.test('URLs that are not http(s) URLs are refused before sending: 500 BAD_UPSTREAM_REQUEST, the URL (less credentials) in the log', async (t) => {
  const urls: unknown[] = ['file:///etc/passwd', 'data:text/plain,hi', 'unix:/var/run/docker.sock', 'ftp://example.com/a', 'not a url', '/relative', 42, null, 'http://bob:hunter2@[bad/']
  const { url, logs } = await startApp(t, { allowedOrigins: ['http://127.0.0.1:1'] }, (app) => {
    app.asyncRoute<{ Querystring: { i: string } }>({ method: 'GET', url: '/pipe', handler: (request, reply) => reply.pipe(urls[Number(request.query.i)] as string) })
    app.asyncRoute<{ Querystring: { i: string } }>({
      method: 'GET',
      url: '/fetch',
      handler: async (request, reply) => {
        const error = await reply.fetch(urls[Number(request.query.i)] as string).then(() => null, (error: { code: string }) => error)
        reply.finish({ code: error?.code })
      }
    })
  })
  for (let i = 0; i < urls.length; i++) {
    const res = await request(`${url}/pipe?i=${i}`)
    t.equal(res.statusCode, 500, `pipe(${String(urls[i])})`)
    t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
    t.notMatch(res.body, /passwd|hunter2|example/, 'the URL stays out of the answer')
    const fetched = await request(`${url}/fetch?i=${i}`)
    t.same(JSON.parse(fetched.body), { code: 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST' }, `fetch(${String(urls[i])})`)
  }
  const text = JSON.stringify(logsAt(logs, LEVEL.error))
  t.match(text, 'file:///etc/passwd', 'the log names the URL')
  t.match(text, 'not a url')
  t.notMatch(JSON.stringify(logs), 'hunter2', 'never its credentials')
})

// ---- forwarding headers ----

t.test('forward under trustProxy: x-forwarded-for appends the socket peer, not the claimed ip; forwarded is dropped', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'] ?? null, forwarded: req.headers.forwarded ?? null }))
  })
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.forward(up.url) })
    app.asyncRoute({ method: 'GET', url: '/raw', handler: (_request, reply) => reply.forward(up.url, { xForwarded: false }) })
  }, { trustProxy: true })
  const headers = { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6' }
  t.same(JSON.parse((await request(`${url}/`, { headers })).body), { xff: '6.6.6.6, 127.0.0.1', forwarded: null })
  t.same(JSON.parse((await request(`${url}/`)).body), { xff: '127.0.0.1', forwarded: null })
  t.same(JSON.parse((await request(`${url}/raw`, { headers })).body), { xff: '6.6.6.6', forwarded: 'for=6.6.6.6' }, 'xForwarded: false passes them unchanged')
})

// ---- uploads: bodyLimit, and answers sent while the body is unread ----

interface RawExchange {
  head: string
  /** The server closed the connection (what a keep-alive socket must not wait for). */
  closed: boolean
  /** Bytes of the body the client managed to send. */
  sent: number
}

/**
 * A raw client that streams `total` bytes of body (declared with content-length, or chunked)
 * as fast as the server takes them, and reports the answer's head and whether the server
 * closed the connection within `ms`.
 */
function upload (url: string, path: string, total: number, chunked = false, ms = 4000): Promise<RawExchange> {
  let sent = 0
  const send = (socket: Socket): void => {
    const framing = chunked ? 'transfer-encoding: chunked' : `content-length: ${total}`
    socket.write(`POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\nconnection: keep-alive\r\n${framing}\r\n\r\n`)
    const piece = Buffer.alloc(64 * 1024, 97)
    const pump = (): void => {
      while (sent < total && !socket.destroyed) {
        const size = Math.min(piece.length, total - sent)
        const data = chunked ? Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), piece.subarray(0, size), Buffer.from('\r\n')]) : piece.subarray(0, size)
        sent += size
        if (!socket.write(data)) {
          socket.once('drain', pump)
          return
        }
      }
      if (chunked && !socket.destroyed) socket.write('0\r\n\r\n')
    }
    pump()
  }
  return rawExchange(url, send, ms).then(({ text, closed }) => ({ head: text, closed, sent }))
}

function passThrough (app: FastifyInstance): void {
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
}

t.test('forward(url, { bodyLimit }): 413 for a declared or a growing body; the upstream never gets the whole of it', async (t) => {
  const received: number[] = []
  const up = await upstreamFor(t, (req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length })
    req.on('close', () => received.push(bytes))
    req.on('end', () => res.end(`got ${bytes}`))
  })
  const { url, app } = await startApp(t, {}, (app) => {
    passThrough(app)
    app.asyncRoute({ method: 'POST', url: '/', handler: (_request, reply) => reply.forward(up.url, { bodyLimit: 1024 * 1024 }) })
    for (const bodyLimit of [-1, 1.5, '10', Infinity]) {
      app.asyncRoute({
        method: 'POST',
        url: `/bad-${String(bodyLimit)}`,
        handler: (_request, reply) => {
          t.throws(() => reply.forward(up.url, { bodyLimit: bodyLimit as number }), { code: 'FST_ASYNC_ROUTE_INVALID_ARGUMENT', message: /bodyLimit/ })
          reply.finish('checked')
        }
      })
    }
  })
  for (const bad of [-1, 1.5, '10', Infinity]) {
    t.equal((await request(`${url}/bad-${String(bad)}`, { method: 'POST', body: 'x', headers: { 'content-type': 'text/plain' } })).body, 'checked')
  }
  const small = await request(`${url}/`, { method: 'POST', body: 'x'.repeat(1000), headers: { 'content-type': 'text/plain' } })
  t.equal(small.body, 'got 1000', 'a body within the limit passes')
  const declared = await upload(url, '/', 2 * 1024 * 1024)
  t.match(declared.head, /^HTTP\/1\.1 413 /, 'declared: 413')
  t.match(declared.head, /FST_ASYNC_ROUTE_BODY_TOO_LARGE/)
  t.match(declared.head, /connection: close/i)
  t.ok(declared.closed, 'declared: the connection is closed')
  const growing = await upload(url, '/', 4 * 1024 * 1024, true)
  t.match(growing.head, /^HTTP\/1\.1 413 /, 'chunked: 413')
  t.ok(growing.closed, 'chunked: the connection is closed')
  await waitFor(() => received.length === 2, 3000, 'the upstream request to end')
  t.ok(received[1] as number <= 1024 * 1024, `the upstream got at most the limit (${String(received[1])} bytes)`)
  t.match(app.asyncRoute.stats(), { failed: 2, pending: 0 })
})

t.test('an answer sent while the upload is unread carries connection: close and closes the connection; close() stays bounded', async (t) => {
  const refused = await refusedOrigin()
  const early = await upstreamFor(t, (_req, res) => {
    res.writeHead(401, { 'content-type': 'text/plain' }).end('who are you?')
  })
  const { url, app } = await startApp(t, { closeGrace: 200 }, (app) => {
    passThrough(app)
    app.asyncRoute({ method: 'POST', url: '/refused', handler: (_request, reply) => reply.forward(`${refused}/`) })
    app.asyncRoute({ method: 'POST', url: '/early', handler: (_request, reply) => reply.forward(`${early.url}/`) })
    app.asyncRoute({ method: 'POST', url: '/ignored', handler: (_request, reply) => reply.finish('not reading that') })
  })
  const exchanges = await Promise.all([
    upload(url, '/refused', 50 * 1024 * 1024),
    upload(url, '/early', 50 * 1024 * 1024),
    upload(url, '/ignored', 50 * 1024 * 1024)
  ])
  const [toRefused, toEarly, ignored] = exchanges
  t.match(toRefused?.head, /^HTTP\/1\.1 502 /, 'refused upstream: 502')
  t.match(toEarly?.head, /^HTTP\/1\.1 401 /, 'early answer relayed')
  t.match(ignored?.head, /^HTTP\/1\.1 200 /, 'finish() that ignored the body')
  for (const exchange of exchanges) {
    t.match(exchange.head, /connection: close/i)
    t.ok(exchange.closed, 'the server closed the connection')
    t.ok(exchange.sent < 50 * 1024 * 1024, 'long before the whole body was sent')
  }
  const took = await closeTimed(app)
  t.ok(took < 1500, `close() resolved in ${took} ms`)
})

t.test('a body the upstream read whole keeps the connection alive', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    void readBody(req).then((body) => res.end(`got ${body.length}`))
  })
  const { url } = await startApp(t, {}, (app) => {
    passThrough(app)
    app.asyncRoute({ method: 'POST', url: '/', handler: (_request, reply) => reply.forward(up.url) })
  })
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const res = await request(`${url}/`, { method: 'POST', body: 'x'.repeat(100_000), headers: { 'content-type': 'text/plain' }, agent })
  t.equal(res.body, 'got 100000')
  t.equal(res.headers.connection, 'keep-alive')
})

t.test('over HTTP/2, an answer to an unread upload closes only its stream, once sent (Node does it; pinned here)', async (t) => {
  const { url, app } = await startApp(t, { closeGrace: 200 }, (app) => {
    passThrough(app)
    app.asyncRoute({ method: 'POST', url: '/ignored', handler: (_request, reply) => reply.finish('not reading that') })
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.finish('still here') })
  }, H2C)
  const session = h2session(t, url)
  const upload = session.request({ ':method': 'POST', ':path': '/ignored', 'content-type': 'application/octet-stream' })
  const chunks: Buffer[] = []
  let status = 0
  upload.on('response', (headers) => { status = Number(headers[':status']) })
  upload.on('data', (chunk: Buffer) => chunks.push(chunk))
  upload.on('error', () => {})
  // Far more than the stream's flow-control window: without the close, it would stall here.
  const piece = Buffer.alloc(64 * 1024, 97)
  let sent = 0
  const pump = (): void => {
    while (sent < 50 * 1024 * 1024 && !upload.destroyed) {
      sent += piece.length
      if (!upload.write(piece)) {
        upload.once('drain', pump)
        return
      }
    }
  }
  pump()
  await new Promise((resolve) => upload.on('close', resolve))
  t.equal(status, 200)
  t.equal(Buffer.concat(chunks).toString(), 'not reading that', 'the whole answer arrived first')
  t.equal(upload.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the stream was closed without error')
  t.ok(sent < 50 * 1024 * 1024, 'long before the whole body was sent')
  t.equal((await h2get(session, '/')).body, 'still here', 'the session serves on')
  t.match(app.asyncRoute.stats(), { finished: 2, pending: 0 })
})

// ---- what an attacker's review found ----

t.test('hasDotSegment is linear: long runs of spaces, controls and tabs cost what new URL() costs, not a blocked event loop', async (t) => {
  // A decoded query value or JSON field chosen by a client. A quadratic trim took seconds here.
  for (const filler of [' ', '\u0001', '\t', ' \t']) {
    const url = `http://up.example/public/${filler.repeat(500_000)}a${filler}`
    const started = performance.now()
    t.equal(hasDotSegment(url), false)
    const ms = performance.now() - started
    t.ok(ms < 2000, `${JSON.stringify(filler)} × 500,000: ${ms.toFixed(0)} ms`)
  }
})

t.test('a URL value whose text conversion throws is refused as a URL: 500 BAD_UPSTREAM_REQUEST, never a throw', async (t) => {
  // What a JSON body can carry: {"url": {"toString": 1}}.
  const hostile = JSON.parse('{"url": {"toString": 1}}') as { url: string }
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/pipe', handler: (_request, reply) => reply.pipe(hostile as never) })
    app.asyncRoute({ method: 'GET', url: '/fetch', handler: async (_request, reply) => reply.pipe(await reply.fetch(hostile.url)) })
    app.asyncRoute({ method: 'GET', url: '/null-object', handler: (_request, reply) => reply.pipe(Object.create(null) as string) })
    app.asyncRoute({ method: 'GET', url: '/fake-url', handler: (_request, reply) => reply.pipe(Object.create(URL.prototype) as URL) })
    app.asyncRoute({ method: 'GET', url: '/upstream-null', upstream: () => null as unknown as string, handler: (_request, reply) => reply.finish('never') })
    app.asyncRoute({ method: 'GET', url: '/later', handler: (_request, reply) => { setTimeout(() => { void reply.pipe(hostile as never) }, 10) } })
  })
  for (const path of ['/pipe', '/fetch', '/null-object', '/fake-url', '/upstream-null', '/later']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 500, path)
    t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST', path)
  }
})

t.test('splitUrl gives what new URL() gives for a scheme without slashes and a bare ?', async (t) => {
  for (const input of ['http:x//evil/path', 'https:host//a/b', 'http://h/p?', 'http:/h//x/y', 'http:\\\\h/x']) {
    const parsed = new URL(input)
    const { origin, path } = splitUrl(input)
    t.same({ origin, path }, { origin: parsed.origin, path: parsed.pathname + parsed.search }, input)
  }
})

t.test('the maxPending 503 to an unread upload carries connection: close and closes the connection; close() stays bounded', async (t) => {
  const { app, url } = await startApp(t, { closeGrace: 200 }, (app) => {
    passThrough(app)
    // The first request holds the only slot until close.
    app.asyncRoute({ method: 'POST', url: '/busy', maxPending: 1, handler: () => {} })
  })
  const holder = upload(url, '/busy', 100 * 1024 * 1024, false, 200)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the slot to be taken')
  const overloaded = await upload(url, '/busy', 100 * 1024 * 1024)
  t.match(overloaded.head, /^HTTP\/1\.1 503 /)
  t.match(overloaded.head, /connection: close/i)
  t.ok(overloaded.closed, 'the server closed the connection')
  await holder
  const took = await closeTimed(app)
  t.ok(took < 1500, `close() resolved in ${took} ms`)
})

t.test('an HTTP/2 server with allowHTTP1 answers HTTP/1.1 requests too (the reply checks the protocol per request)', async (t) => {
  const https = { allowHTTP1: true, key: readFileSync(new URL('./fixtures/tls/key.pem', import.meta.url)), cert: readFileSync(new URL('./fixtures/tls/cert.pem', import.meta.url)) }
  const { url } = await startApp(t, { timeout: 300 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.finish('hi') })
    app.asyncRoute({ method: 'GET', url: '/forgot', handler: () => {} })
  }, { http2: true, https } as unknown as FastifyServerOptions)
  const port = Number(new URL(url).port)
  const ask = (path: string): Promise<string> => new Promise((resolve) => {
    const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    let text = ''
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => resolve(text))
    socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
  })
  t.match(await ask('/'), /^HTTP\/1\.1 200 [^]*\r\n\r\nhi$/)
  t.match(await ask('/forgot'), /^HTTP\/1\.1 504 [^]*FST_ASYNC_ROUTE_TIMEOUT/, 'the watchdog answers too')
})

t.test('behind a Unix socket, forward appends no peer address to x-forwarded-for', async (t) => {
  const seen: Array<string | undefined> = []
  const up = await upstreamFor(t, (req, res) => {
    seen.push(req.headers['x-forwarded-for'] as string | undefined)
    res.end('ok')
  })
  const app = Fastify()
  await app.register(asyncRoute)
  app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.forward(up.url) })
  const socketPath = join(mkdtempSync(join(tmpdir(), 'far-')), 'app.sock')
  await app.listen({ path: socketPath })
  t.teardown(() => app.close())
  for (const headers of [{ 'x-forwarded-for': '203.0.113.9' }, {}]) {
    await new Promise<void>((resolve) => http.get({ socketPath, path: '/', headers }, (res) => { res.resume(); res.on('end', resolve) }))
  }
  t.same(seen, ['203.0.113.9', undefined])
})
