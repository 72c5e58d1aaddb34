// Runs every file in examples/ against a local upstream, through the built package as a
// user would import it ('fastify-async-route').
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { buildComposedDispatcherApp } from '../examples/composed-dispatcher.js'
import { startFeedServer } from '../examples/feed-server.js'
import { buildGatewayApp } from '../examples/gateway.js'
import { buildForgetfulApp } from '../examples/forgot-finish.js'
import { buildProxyApp } from '../examples/proxy.js'
import { buildStreamingApp } from '../examples/streaming.js'
import { buildTornadoApp } from '../examples/tornado.js'
import { startExample } from './helpers/example.js'
import { captureLogs, LEVEL } from './helpers/logs.js'
import { openRequest, request } from './helpers/client.js'

async function serve (t: { teardown: (fn: () => unknown) => void }, app: FastifyInstance): Promise<string> {
  t.teardown(() => app.close())
  return await app.listen({ port: 0, host: '127.0.0.1' })
}

t.test('tornado: the handler returns, the callback finishes the reply later', async (t) => {
  const feed = await startFeedServer(4)
  t.teardown(feed.close)
  const { logs, logger } = captureLogs('info')
  const url = await serve(t, await buildTornadoApp(feed.url, { logger }))
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'Fetched 4 entries from the feed')
  const answered = logs.find((line) => line.msg === 'feed answered')
  t.ok(answered, 'the callback logged the upstream header names')
  t.ok((answered?.headers as string[]).includes('content-type'))
})

t.test('streaming: the head and the first chunks arrive before the reply is finished', async (t) => {
  const url = await serve(t, await buildStreamingApp({ logger: false }))
  const { res } = await openRequest(`${url}/countdown?from=3`)
  t.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
  const first = await new Promise<string>((resolve) => res.once('data', (chunk: Buffer) => resolve(chunk.toString())))
  t.equal(first, '3\n', 'first chunk arrives on its own')
  let rest = ''
  res.on('data', (chunk: Buffer) => { rest += chunk.toString() })
  await new Promise((resolve) => res.on('end', resolve))
  t.equal(first + rest, '3\n2\n1\nliftoff\n')
  const invalid = await request(`${url}/countdown?from=x`)
  t.equal(invalid.statusCode, 400, 'schema validation runs before the handler')
})

t.test('forgot-finish: the watchdog answers 504 and logs where the reply hung', async (t) => {
  const feed = await startFeedServer()
  t.teardown(feed.close)
  const { logs, logger } = captureLogs('info')
  const url = await serve(t, await buildForgetfulApp(feed.url, { logger }))
  const started = Date.now()
  const res = await request(`${url}/forgot`)
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.ok(Date.now() - started >= 450, 'answered by the 500 ms watchdog')
  const hang = logs.filter((line) => line.level === LEVEL.warn && String(line.msg).includes('reply.finish() forgotten'))
  t.equal(hang.length, 1, 'one hang report')
  t.match(hang[0]?.report, { method: 'GET', url: '/forgot', handlerSettled: true, headersSent: false, inflight: [] })
})

t.test('proxy: pipe(url), fetch + pipe(res) and the upstream option stream the feed', async (t) => {
  const feed = await startFeedServer(2)
  t.teardown(feed.close)
  const url = await serve(t, await buildProxyApp(feed.url, { logger: false }))
  for (const path of ['/direct', '/checked', '/declared']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 200, path)
    t.equal(res.headers['content-type'], 'application/json', path)
    t.equal(JSON.parse(res.body).entries.length, 2, path)
  }
  t.equal((await request(`${url}/checked`)).headers['x-proxied-by'], 'fastify-async-route')
})

t.test('gateway: forward for writes and a streamed upload, a retried read, allowedOrigins', async (t) => {
  // A small JSON API whose first read answers 503.
  let reads = 0
  const seen: http.IncomingHttpHeaders[] = []
  const api = http.createServer((req, res) => {
    seen.push(req.headers)
    const hash = createHash('sha256')
    let length = 0
    req.on('data', (chunk: Buffer) => { hash.update(chunk); length += chunk.length })
    req.on('end', () => {
      const json = (status: number, value: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value))
      }
      if (req.method === 'GET') {
        if (reads++ === 0) return json(503, { error: 'warming up' })
        return json(200, { id: req.url?.split('/').pop(), name: 'widget' })
      }
      if (req.url?.startsWith('/api/files/') === true) return json(201, { length, sha256: hash.digest('hex') })
      json(req.method === 'POST' ? 201 : 200, { method: req.method, url: req.url, length })
    })
  })
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { api.closeAllConnections(); api.close(() => resolve()) }))
  const apiUrl = `http://127.0.0.1:${(api.address() as { port: number }).port}`
  const url = await serve(t, await buildGatewayApp(apiUrl, { logger: false }))

  const read = await request(`${url}/api/items/7`)
  t.equal(read.statusCode, 200, 'the 503 was retried')
  t.same(JSON.parse(read.body), { id: '7', name: 'widget' })
  t.equal(reads, 2)

  const created = await request(`${url}/api/items`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie: 'session=secret' },
    body: '{ "name": "gadget" }'
  })
  t.equal(created.statusCode, 201)
  t.same(JSON.parse(created.body), { method: 'POST', url: '/api/items', length: 17 })
  const posted = seen[seen.length - 1] as http.IncomingHttpHeaders
  t.equal(posted['x-gateway'], 'fastify-async-route')
  t.equal(posted.cookie, undefined, 'the cookie stays at the gateway')
  t.equal(posted['x-forwarded-for'], '127.0.0.1')

  const file = randomBytes(2 * 1024 * 1024)
  const uploaded = await new Promise<{ statusCode: number, body: string }>((resolve, reject) => {
    const req = http.request(`${url}/api/files/blob.bin`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let body = ''
      res.on('data', (chunk: Buffer) => { body += chunk.toString() })
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.write(file.subarray(0, 1024 * 1024))
    setTimeout(() => req.end(file.subarray(1024 * 1024)), 20)
  })
  t.equal(uploaded.statusCode, 201)
  t.same(JSON.parse(uploaded.body), { length: file.length, sha256: createHash('sha256').update(file).digest('hex') }, 'streamed whole')

  const escaped = await request(`${url}/api/items/..%2f..%2fadmin`)
  t.equal(escaped.statusCode, 400)
  t.equal(JSON.parse(escaped.body).code, 'FST_ASYNC_ROUTE_BAD_PATH')
})

t.test('composed-dispatcher: an Agent composed with the dns interceptor serves pipe(url) and fetch', async (t) => {
  const feed = await startFeedServer(2)
  t.teardown(feed.close)
  // A name, not an address: the dns interceptor resolves it.
  const feedUrl = feed.url.replace('127.0.0.1', 'localhost')
  const url = await serve(t, await buildComposedDispatcherApp(feedUrl, { logger: false }))
  const piped = await request(`${url}/feed`)
  t.equal(piped.statusCode, 200)
  t.equal(JSON.parse(piped.body).entries.length, 2)
  const counted = await request(`${url}/count`)
  t.equal(counted.statusCode, 200)
  t.equal(counted.body, '2 entries')
})

t.test('quick-start: the README example runs as written against 127.0.0.1:8080', async (t) => {
  const upstream = http.createServer((_request, response) => response.end('upstream'))
  const listening = await new Promise<boolean>((resolve) => {
    upstream.once('error', () => resolve(false))
    upstream.listen(8080, '127.0.0.1', () => resolve(true))
  })
  if (!listening) {
    t.comment('port 8080 is taken on this machine: the quick-start example cannot run here')
    return
  }
  t.teardown(() => new Promise<void>((resolve) => { upstream.closeAllConnections(); upstream.close(() => resolve()) }))
  const { app } = await import('../examples/quick-start.js')
  app.log.level = 'silent'
  const url = await serve(t, app)
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'done')
})

t.test('npm start: the example app prints its URL and answers GET / with 200', async (t) => {
  const { child, address, exited } = await startExample(t, 'examples/start.ts')
  const res = await request(`${address}/`)
  t.equal(res.statusCode, 200)
  t.match(res.body, /^Fetched 3 entries/)
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
})
