// reply.forward(url): the incoming request goes on to `url` — its method, its headers less the
// hop-by-hop ones, x-forwarded-*, its body as parsed or streamed — and the answer is relayed as
// pipe(url) relays it. Real upstreams, real clients; the key cases with the plugin's own agent
// and with undici 7 and undici 8 dispatchers (undici 8 on Node >= 22.19).
import { createHash, randomBytes } from 'node:crypto'
import http, { type IncomingHttpHeaders } from 'node:http'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { hasDotSegment } from '../plugin/target.js'
import type { ForwardOptions } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'
import { dispatcherKinds } from './helpers/dispatchers.js'
import { readBody, refusedOrigin, upstreamFor, type Upstream } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

interface Seen {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: string
}

/** An upstream that records what it got and answers 201 with a header, echoing the body's length. */
async function recordingUpstream (t: Test, seen: Seen[]): Promise<Upstream> {
  return await upstreamFor(t, (req, res) => {
    void readBody(req).then((body) => {
      seen.push({ method: String(req.method), url: String(req.url), headers: req.headers, body })
      res.writeHead(201, { 'content-type': 'text/plain', 'x-upstream': 'yes', connection: 'keep-alive, x-hop', 'x-hop': 'no' })
      res.end(`got ${body.length}`)
    })
  })
}

/** A gateway: every method under /api/* is forwarded to the upstream with the same path. */
function gateway (upstream: string, options?: ForwardOptions | ((request: any) => ForwardOptions)) {
  return (app: FastifyInstance): void => {
    app.asyncRoute({
      method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'],
      url: '/api/*',
      handler (request, reply) {
        return reply.forward(upstream + request.url, typeof options === 'function' ? options(request) : options)
      }
    })
  }
}

const KEY_KINDS = new Set(["the plugin's own Agent", 'undici 7 Agent', 'undici 8 Agent'])
const kinds = (await dispatcherKinds()).filter((kind) => KEY_KINDS.has(kind.name))

for (const kind of kinds) {
  t.test(`${kind.name}: a parsed JSON POST goes on cleaned, with x-forwarded-*, and the answer is relayed`, async (t) => {
    const seen: Seen[] = []
    const upstream = await recordingUpstream(t, seen)
    const built = await kind.build(upstream.origin)
    t.teardown(built.close)
    const { url } = await startApp(t, { dispatcher: built.dispatcher }, gateway(built.origin))
    const body = JSON.stringify({ name: 'a', list: [1, 2] })
    const res = await request(`${url}/api/items?x=1`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json; charset=utf-8',
        // The JSON parser reads the body; it is sent again, re-encoded (with spaces gone).
        'content-length': String(Buffer.byteLength(' ' + body)),
        connection: 'keep-alive, x-secret',
        'keep-alive': 'timeout=5',
        'x-secret': 'connection-named',
        te: 'trailers',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        'proxy-connection': 'keep-alive',
        expect: '100-continue',
        'x-kept': 'yes'
      },
      body: ' ' + body
    })
    t.equal(res.statusCode, 201, 'the upstream status')
    t.equal(res.body, `got ${body.length}`, 'the upstream body')
    t.equal(res.headers['x-upstream'], 'yes', 'the upstream headers')
    t.equal(res.headers['x-hop'], undefined, 'a response header the upstream connection names is not relayed')
    t.equal(seen.length, 1)
    const got = seen[0] as Seen
    t.equal(got.method, 'POST', 'the incoming method')
    t.equal(got.url, '/api/items?x=1', 'the url as given')
    t.equal(got.body, body, 'the parsed body, serialised again')
    t.equal(got.headers['content-type'], 'application/json; charset=utf-8', 'a JSON type is kept as it came')
    t.equal(got.headers['content-length'], String(Buffer.byteLength(body)), 'content-length is that of the re-encoded body')
    t.equal(got.headers.host, new URL(built.origin).host, "host is the URL's")
    t.equal(got.headers['x-kept'], 'yes', 'other headers pass')
    for (const name of ['keep-alive', 'x-secret', 'te', 'proxy-authorization', 'proxy-connection', 'expect']) {
      t.equal(got.headers[name], undefined, `${name} is not forwarded`)
    }
    t.equal(got.headers['x-forwarded-for'], '127.0.0.1')
    t.equal(got.headers['x-forwarded-proto'], 'http')
    t.equal(got.headers['x-forwarded-host'], new URL(url).host)
  })

  t.test(`${kind.name}: a streamed upload (pass-through parser) is streamed with its content-length`, async (t) => {
    const seen: Array<{ headers: IncomingHttpHeaders, digest: string, length: number }> = []
    const upstream = await upstreamFor(t, (req, res) => {
      const hash = createHash('sha256')
      let length = 0
      req.on('data', (chunk: Buffer) => { hash.update(chunk); length += chunk.length })
      req.on('end', () => {
        seen.push({ headers: req.headers, digest: hash.digest('hex'), length })
        res.end('stored')
      })
    })
    const built = await kind.build(upstream.origin)
    t.teardown(built.close)
    const { url } = await startApp(t, { dispatcher: built.dispatcher }, (app) => {
      app.register(async (scope) => {
        scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
        gateway(built.origin)(scope)
      })
    })
    const payload = randomBytes(3 * 1024 * 1024 + 7)
    const res = await uploadRaw(`${url}/api/upload`, payload, { 'content-type': 'application/octet-stream', 'content-length': String(payload.length) })
    t.equal(res.statusCode, 200)
    t.equal(res.body, 'stored')
    t.equal(seen[0]?.length, payload.length, 'every byte arrived')
    t.equal(seen[0]?.digest, createHash('sha256').update(payload).digest('hex'), 'and in order')
    t.equal(seen[0]?.headers['content-length'], String(payload.length), 'a streamed body keeps its content-length')
    t.equal(seen[0]?.headers['content-type'], 'application/octet-stream')
    // Chunked (no content-length): transfer-encoding is hop-by-hop; undici streams it chunked itself.
    const chunked = await uploadRaw(`${url}/api/upload`, payload, { 'content-type': 'application/octet-stream' })
    t.equal(chunked.statusCode, 200)
    t.equal(seen[1]?.digest, seen[0]?.digest)
    t.equal(seen[1]?.headers['content-length'], undefined)
    t.equal(seen[1]?.headers['transfer-encoding'], 'chunked')
  })
}

/** Sends `payload` in several writes, so that the server sees a stream. */
function uploadRaw (url: string, payload: Buffer, headers: Record<string, string>): Promise<{ statusCode: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
    })
    req.on('error', reject)
    const step = 256 * 1024
    for (let i = 0; i < payload.length; i += step) req.write(payload.subarray(i, i + step))
    req.end()
  })
}

t.test('x-forwarded-for appends, -proto and -host replace; xForwarded: false adds none and passes incoming ones', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url } = await startApp(t, {}, (app) => {
    gateway(upstream.origin)(app)
    asyncGet(app, '/plain/*', {
      handler (request, reply) {
        return reply.forward(upstream.origin + request.url, { xForwarded: false })
      }
    })
  })
  const incoming = { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'example.com' }
  await request(`${url}/api/a`, { headers: incoming })
  t.equal(seen[0]?.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(seen[0]?.headers['x-forwarded-proto'], 'http')
  t.equal(seen[0]?.headers['x-forwarded-host'], new URL(url).host)
  await request(`${url}/plain/a`, { headers: incoming })
  t.match(seen[1]?.headers, incoming, 'incoming ones unchanged')
  await request(`${url}/plain/b`)
  for (const name of Object.keys(incoming)) t.equal(seen[2]?.headers[name], undefined, `no ${name} added`)
})

t.test('an HTTP/1.0 request without host: no x-forwarded-host, an incoming one removed', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url } = await startApp(t, {}, gateway(upstream.origin))
  const net = await import('node:net')
  const { port } = new URL(url)
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => {
      // (Not end(): a half-closed socket would be closed before the answer.)
      socket.write('GET /api/old HTTP/1.0\r\nx-forwarded-host: spoofed.example\r\n\r\n')
    })
    let text = ''
    socket.on('data', (chunk: Buffer) => { text += chunk.toString() })
    socket.on('end', () => resolve(text))
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 201/)
  t.equal(seen[0]?.headers['x-forwarded-host'], undefined)
  t.equal(seen[0]?.headers['x-forwarded-for'], '127.0.0.1')
})

t.test('options.headers apply last, names matched without regard to case: a value replaces, null removes', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url } = await startApp(t, {}, gateway(upstream.origin, {
    headers: { 'X-Replace': 'new', 'x-remove': null, Authorization: null, 'X-Forwarded-For': null, 'x-added': 'yes', 'x-number': 7, 'x-list': ['a', 'b'] }
  }))
  await request(`${url}/api/h`, { headers: { 'x-replace': 'old', 'X-Remove': 'gone', authorization: 'secret', 'x-other': 'kept' } })
  const headers = seen[0]?.headers as IncomingHttpHeaders
  t.equal(headers['x-replace'], 'new')
  t.equal(headers['x-remove'], undefined)
  t.equal(headers.authorization, undefined)
  t.equal(headers['x-forwarded-for'], undefined, 'an added x-forwarded header can be removed too')
  t.equal(headers['x-added'], 'yes')
  t.equal(headers['x-number'], '7')
  t.equal(headers['x-list'], 'a, b')
  t.equal(headers['x-other'], 'kept')
})

t.test('bodies: strings and bytes as they are, other parsed values as JSON, none for GET/HEAD or when undefined', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url } = await startApp(t, {}, (app) => {
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
    app.addContentTypeParser('application/x-pairs', { parseAs: 'string' }, (_request, body, done) => {
      done(null, Object.fromEntries(String(body).split('&').map((pair) => pair.split('='))))
    })
    app.addContentTypeParser('application/vnd.test+json', { parseAs: 'string' }, (_request, body, done) => done(null, JSON.parse(String(body))))
    gateway(upstream.origin)(app)
  })
  await request(`${url}/api/text`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'plain text' })
  t.equal(seen[0]?.body, 'plain text')
  t.equal(seen[0]?.headers['content-type'], 'text/plain')
  await request(`${url}/api/bytes`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: 'bytes' })
  t.equal(seen[1]?.body, 'bytes')
  t.equal(seen[1]?.headers['content-type'], 'application/octet-stream')
  await request(`${url}/api/pairs`, { method: 'PATCH', headers: { 'content-type': 'application/x-pairs' }, body: 'a=1&b=2' })
  t.equal(seen[2]?.body, '{"a":"1","b":"2"}', 'a parsed value goes as JSON')
  t.equal(seen[2]?.headers['content-type'], 'application/json', 'typed as JSON')
  await request(`${url}/api/vnd`, { method: 'POST', headers: { 'content-type': 'application/vnd.test+json' }, body: '[1, 2]' })
  t.equal(seen[3]?.body, '[1,2]')
  t.equal(seen[3]?.headers['content-type'], 'application/vnd.test+json', 'a +json type is kept')
  await request(`${url}/api/none`, { method: 'DELETE' })
  t.equal(seen[4]?.method, 'DELETE')
  t.equal(seen[4]?.body, '', 'no body when request.body is undefined')
  t.equal(seen[4]?.headers['content-type'], undefined)
  const head = await request(`${url}/api/head`, { method: 'HEAD' })
  t.equal(head.statusCode, 201)
  t.equal(head.body, '', 'HEAD: the head only')
  t.equal(seen[5]?.method, 'HEAD')
  await request(`${url}/api/get`, { headers: { 'content-length': '0' } })
  t.equal(seen[6]?.method, 'GET')
  t.equal(seen[6]?.headers['content-length'], undefined, 'GET: no body, no content-length')
})

t.test('dot segments in the path: 400 FST_ASYNC_ROUTE_BAD_PATH before anything is sent', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url, logs } = await startApp(t, {}, (app) => {
    asyncGet(app, '/raw', {
      handler (request, reply) {
        return reply.forward(`${upstream.origin}/prefix/${String((request.query as { p: string }).p)}`)
      }
    })
  })
  for (const path of ['..', '../secret', '%2e%2e/secret', '%2E./x', '.%2e', '.', 'a/./b', 'a%2f..%2fb', 'a%5c..%5cb', 'a\\..\\b', 'x/%2e']) {
    const res = await request(`${url}/raw?p=${encodeURIComponent(path)}`)
    t.equal(res.statusCode, 400, path)
    t.same(JSON.parse(res.body), { statusCode: 400, code: 'FST_ASYNC_ROUTE_BAD_PATH', error: 'Bad Request', message: 'The forwarded path is not allowed' }, path)
  }
  t.equal(upstream.connections(), 0, 'nothing was sent')
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'a 400: not an error of the server')
  for (const path of ['.well-known/x', 'a..b', '...', '..b', 'x?q=../..', 'x#/../..', '%2e%2e%2e']) {
    const res = await request(`${url}/raw?p=${encodeURIComponent(path)}`)
    t.equal(res.statusCode, 201, `${path} is not a dot segment`)
  }
  // The URL itself, too: only the path counts.
  t.ok(hasDotSegment('http://h/a/../b'))
  t.notOk(hasDotSegment('http://h..x/a'))
  t.notOk(hasDotSegment('http://h/a?b=/../'))
  t.ok(hasDotSegment('/relative/../x'))
  t.ok(hasDotSegment('http:\\\\h\\a\\..\\b'))
})

t.test('a URL object is used as it is (the parser already resolved its segments)', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/u', {
      handler (_request, reply) {
        return reply.forward(new URL(`${upstream.origin}/a/../b`))
      }
    })
  })
  t.equal((await request(`${url}/u`)).statusCode, 201)
  t.equal(seen[0]?.url, '/b')
})

t.test('allowedOrigins, upstream errors, the watchdog and client aborts apply as for pipe(url)', async (t) => {
  const stalled: http.IncomingMessage[] = []
  const upstream = await upstreamFor(t, (req) => { stalled.push(req) })
  const refused = await refusedOrigin()
  const { url, app } = await startApp(t, { allowedOrigins: [upstream.origin, refused] }, (app) => {
    asyncGet(app, '/denied', {
      handler (_request, reply) { return reply.forward('http://127.0.0.2:1/x') }
    })
    asyncGet(app, '/refused', {
      handler (_request, reply) { return reply.forward(`${refused}/x`) }
    })
    asyncGet(app, '/stall', {
      timeout: 150,
      handler (_request, reply) { return reply.forward(`${upstream.origin}/stall`) }
    })
    asyncGet(app, '/headers-timeout', {
      handler (_request, reply) { return reply.forward(`${upstream.origin}/ht`, { headersTimeout: 100, bodyTimeout: 5000 }) }
    })
    asyncGet(app, '/invalid', {
      handler (_request, reply) { return reply.forward('not a url') }
    })
  })
  const denied = await request(`${url}/denied`)
  t.equal(denied.statusCode, 500)
  t.equal(JSON.parse(denied.body).code, 'FST_ASYNC_ROUTE_ORIGIN_DENIED')
  const failed = await request(`${url}/refused`)
  t.equal(failed.statusCode, 502)
  t.equal(JSON.parse(failed.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  t.notMatch(failed.body, /127\.0\.0\.1/, 'the upstream address stays out of the answer')
  const timedOut = await request(`${url}/stall`)
  t.equal(timedOut.statusCode, 504)
  t.equal(JSON.parse(timedOut.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  const headersTimeout = await request(`${url}/headers-timeout`)
  t.equal(headersTimeout.statusCode, 504)
  t.equal(JSON.parse(headersTimeout.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
  t.equal(JSON.parse((await request(`${url}/invalid`)).body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST', 'an unparsable URL is refused before the origin check')
  const before = stalled.length
  const client = await sendOnly(`${url}/stall`)
  await waitFor(() => stalled.length > before, 2000, 'the forwarded request')
  const upstreamReq = stalled[stalled.length - 1] as http.IncomingMessage
  const gone = new Promise((resolve) => upstreamReq.socket.once('close', resolve))
  client.destroy()
  await gone
  t.pass('a client that leaves cancels the forwarded request')
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort to be counted')
})

t.test('forward resolves when the answer is relayed, and never rejects', async (t) => {
  const refused = await refusedOrigin()
  const settled: string[] = []
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) {
        reply.forward(`${refused}/x`).then(() => settled.push('resolved'), () => settled.push('rejected'))
      }
    })
    asyncGet(app, '/bad', {
      handler (_request, reply) {
        reply.forward(`${refused}/../x`).then(() => settled.push('resolved'), () => settled.push('rejected'))
      }
    })
  })
  t.equal((await request(`${url}/`)).statusCode, 502)
  t.equal((await request(`${url}/bad`)).statusCode, 400)
  await sleep(20)
  t.same(settled, ['resolved', 'resolved'])
})

t.test('misuse: unknown options, headers that are not an object, a bad retry throw a coded TypeError', async (t) => {
  const upstream = await upstreamFor(t)
  const thrown: Array<{ name: string, code: string, message: string }> = []
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) {
        for (const options of [{ header: {} }, { headers: 'x' }, null, { retry: { attempts: 0 } }, { retry: { minDelay: 10, maxDelay: 5 } }]) {
          try {
            void reply.forward(upstream.url, options as unknown as ForwardOptions)
          } catch (error) {
            thrown.push(error as { name: string, code: string, message: string })
          }
        }
        reply.finish('ok')
      }
    })
  })
  t.equal((await request(`${url}/`)).body, 'ok')
  t.equal(thrown.length, 5)
  for (const error of thrown) t.match(error, { name: 'TypeError', code: 'FST_ASYNC_ROUTE_INVALID_ARGUMENT' })
  t.match(thrown[0]?.message, /"header"/)
  t.match(thrown[3]?.message, /retry\.attempts/)
  t.match(thrown[4]?.message, /retry\.minDelay/)
  t.equal(upstream.connections(), 0)
})

t.test('HTTP/2 clients: pseudo-headers are not forwarded; x-forwarded-host is the :authority', async (t) => {
  const seen: Seen[] = []
  const upstream = await recordingUpstream(t, seen)
  const http2 = await import('node:http2')
  const { url } = await startApp(t, {}, gateway(upstream.origin), { http2: true } as object)
  const session = http2.connect(url)
  t.teardown(() => session.close())
  const status = await new Promise<number>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/api/h2', 'content-type': 'application/json' })
    stream.on('response', (headers) => resolve(Number(headers[':status'])))
    stream.on('error', reject)
    stream.resume()
    stream.end('{"a":1}')
  })
  t.equal(status, 201)
  t.equal(seen[0]?.body, '{"a":1}')
  t.equal(seen[0]?.headers['x-forwarded-host'], new URL(url).host)
  t.notOk(Object.keys(seen[0]?.headers ?? {}).some((name) => name.startsWith(':')))
})
