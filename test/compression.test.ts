// The `compress` option: what @fastify/compress does for ordinary routes, for async routes —
// finish() bodies, write() streams and relayed upstream bodies — decoded here with node:zlib
// to the same bytes; event streams stay live; what must never be compressed is not.
import { randomBytes } from 'node:crypto'
import http, { type IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import zlib from 'node:zlib'
import Fastify from 'fastify'
import t from 'tap'
import asyncRoute from '../plugin/index.js'
import { negotiate, resolveCompress } from '../plugin/compression.js'
import { asyncGet, startApp } from './helpers/app.js'
import { waitFor } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

const BIG = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item number ${i}`, tags: ['a', 'b', 'c'] })) })

const LARGE = randomBytes(3 * 1024 * 1024).toString('base64')

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  /** The body as sent. */
  raw: Buffer
  /** The body decoded by its content-encoding. */
  text: string
}

function decoder (encoding: string | undefined): zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | null {
  if (encoding === 'gzip') return zlib.createGunzip()
  if (encoding === 'deflate') return zlib.createInflate()
  if (encoding === 'br') return zlib.createBrotliDecompress()
  return null
}

function get (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const raw = Buffer.concat(chunks)
        const encoding = res.headers['content-encoding']
        const text = encoding === 'gzip'
          ? zlib.gunzipSync(raw).toString()
          : encoding === 'deflate' ? zlib.inflateSync(raw).toString() : encoding === 'br' ? zlib.brotliDecompressSync(raw).toString() : raw.toString()
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, text })
      })
    }).on('error', reject).end()
  })
}

/** Opens a GET and hands back its decoded text as it arrives. */
function stream (url: string, headers: Record<string, string>): Promise<{ text: () => string, ended: Promise<void>, headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http.request(url, { headers, agent: false }, (res) => {
      let text = ''
      const decoded: Readable = decoder(res.headers['content-encoding']) ?? res
      if (decoded !== res) res.pipe(decoded as unknown as NodeJS.WritableStream)
      decoded.on('data', (chunk: Buffer) => { text += chunk.toString() })
      const ended = new Promise<void>((resolve) => decoded.on('end', () => resolve()))
      resolve({ text: () => text, ended, headers: res.headers })
    }).on('error', reject).end()
  })
}

t.test('finish(): br, gzip and deflate decode to the same bytes; vary, no content-length; below the threshold or unaccepted it goes as it is', async (t) => {
  const { url } = await startApp(t, { compress: true }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/big', handler: (_request, reply) => reply.finish(JSON.parse(BIG)) })
    app.asyncRoute({ method: 'GET', url: '/small', handler: (_request, reply) => reply.finish({ small: true }) })
  })
  for (const encoding of ['br', 'gzip', 'deflate']) {
    const res = await get(`${url}/big`, { 'accept-encoding': encoding })
    t.equal(res.headers['content-encoding'], encoding)
    t.equal(res.text, BIG, `${encoding} decodes to the body`)
    t.ok(res.raw.length < BIG.length / 3, `${encoding}: ${res.raw.length} of ${BIG.length} bytes`)
    t.equal(res.headers['content-length'], undefined)
    t.equal(res.headers.vary, 'accept-encoding')
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  }
  const preferred = await get(`${url}/big`, { 'accept-encoding': 'gzip, deflate, br' })
  t.equal(preferred.headers['content-encoding'], 'br', 'equal q-values: our order, br first')
  t.equal((await get(`${url}/big`, { 'accept-encoding': 'br;q=0.5, gzip' })).headers['content-encoding'], 'gzip', 'the client\'s q-values first')
  t.equal((await get(`${url}/big`, { 'accept-encoding': 'GZIP' })).headers['content-encoding'], 'gzip', 'tokens without regard to case')
  for (const accept of ['br;q=0, gzip;q=0, deflate;q=0', 'identity', '']) {
    const plain = await get(`${url}/big`, { 'accept-encoding': accept })
    t.equal(plain.headers['content-encoding'], undefined, `accept-encoding: ${JSON.stringify(accept)}`)
    t.equal(plain.text, BIG)
    t.equal(plain.headers['content-length'], String(BIG.length))
    t.equal(plain.headers.vary, 'accept-encoding', 'varies all the same')
  }
  const none = await get(`${url}/big`)
  t.equal(none.headers['content-encoding'], undefined, 'no accept-encoding: as it is')
  t.equal(none.headers.vary, 'accept-encoding')
  const small = await get(`${url}/small`, { 'accept-encoding': 'gzip' })
  t.equal(small.headers['content-encoding'], undefined, 'below the threshold')
  t.equal(small.text, '{"small":true}')
})

t.test('write() + flush(): each event of a compressed event stream reaches the client before the stream ends', async (t) => {
  let release = (): void => {}
  const { url } = await startApp(t, { compress: true }, (app) => {
    asyncGet(app, '/events', {
      timeout: 0,
      async handler (_request, reply) {
        reply.header('content-type', 'text/event-stream')
        reply.write('data: one\n\n')
        await reply.flush()
        await new Promise<void>((resolve) => { release = resolve })
        reply.write('data: two\n\n')
        await reply.flush()
        reply.finish()
      }
    })
  })
  for (const encoding of ['br', 'gzip', 'deflate']) {
    const client = await stream(`${url}/events`, { 'accept-encoding': encoding })
    t.equal(client.headers['content-encoding'], encoding)
    await waitFor(() => client.text() === 'data: one\n\n', 2000, `${encoding}: the first event`)
    release()
    await client.ended
    t.equal(client.text(), 'data: one\n\ndata: two\n\n', `${encoding}: the whole stream`)
  }
})

t.test('relayed upstream bodies (pipe(url), forward, pipe(res)) are compressed; a relayed event stream stays live', async (t) => {
  let release = (): void => {}
  const up = await upstreamFor(t, (req, res) => {
    const path = String(req.url).replace(/^\/+/, '/')
    if (path === '/json') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BIG), etag: '"v1"' }).end(BIG)
    } else if (path === '/large') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(LARGE)
    } else if (path === '/tiny') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 }).end('{}')
    } else if (path === '/encoded') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(zlib.gzipSync(BIG))
    } else {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: first\n\n')
      release = () => res.end('data: last\n\n')
    }
  })
  const { url } = await startApp(t, { compress: true }, (app) => {
    app.asyncRoute<{ Params: { path: string } }>({ method: 'GET', url: '/pipe/:path', handler: (request, reply) => reply.pipe(`${up.url}/${request.params.path}`) })
    app.asyncRoute<{ Params: { path: string } }>({ method: 'GET', url: '/forward/:path', handler: (request, reply) => reply.forward(`${up.url}/${request.params.path}`) })
    app.asyncRoute<{ Params: { path: string } }>({ method: 'GET', url: '/fetch/:path', handler: async (request, reply) => reply.pipe(await reply.fetch(`${up.url}/${request.params.path}`)) })
  })
  for (const way of ['pipe', 'forward', 'fetch']) {
    for (const encoding of ['br', 'gzip', 'deflate']) {
      const res = await get(`${url}/${way}/json`, { 'accept-encoding': encoding })
      t.equal(res.headers['content-encoding'], encoding, `${way} ${encoding}`)
      t.equal(res.text, BIG)
      t.equal(res.headers['content-length'], undefined)
      t.equal(res.headers.etag, 'W/"v1"', 'a strong etag made weak')
    }
    // Megabytes of text that compress badly: the compressor's buffer fills, backpressure holds.
    const large = await get(`${url}/${way}/large`, { 'accept-encoding': 'gzip' })
    t.equal(large.text, LARGE, `${way}: a large body decodes whole`)
    const tiny = await get(`${url}/${way}/tiny`, { 'accept-encoding': 'gzip' })
    t.equal(tiny.headers['content-encoding'], undefined, `${way}: a content-length below the threshold goes as it is`)
    t.equal(tiny.headers['content-length'], '2')
    const encoded = await get(`${url}/${way}/encoded`, { 'accept-encoding': 'br' })
    t.equal(encoded.headers['content-encoding'], 'gzip', `${way}: an encoded body is never encoded again`)
    t.equal(encoded.text, BIG)
    const events = await stream(`${url}/${way}/events`, { 'accept-encoding': 'gzip' })
    t.equal(events.headers['content-encoding'], 'gzip')
    await waitFor(() => events.text() === 'data: first\n\n', 2000, `${way}: the first relayed event`)
    release()
    await events.ended
    t.equal(events.text(), 'data: first\n\ndata: last\n\n')
  }
})

t.test('never compressed: error answers, HEAD, 206, cache-control: no-transform, bytes; vary merged with what a hook set', async (t) => {
  const { url } = await startApp(t, { compress: { threshold: 0 } }, (app) => {
    app.addHook('onRequest', async (_request, reply) => { reply.header('vary', 'Origin') })
    app.asyncRoute({ method: 'GET', url: '/error', handler: () => { throw Object.assign(new Error('x'.repeat(5000)), { statusCode: 400 }) } })
    app.asyncRoute({ method: 'GET', url: '/head', handler: (_request, reply) => reply.finish(BIG) })
    app.asyncRoute({ method: 'GET', url: '/partial', handler: (_request, reply) => reply.status(206).finish(BIG) })
    app.asyncRoute({ method: 'GET', url: '/no-transform', handler: (_request, reply) => reply.header('cache-control', 'public, no-transform').finish(BIG) })
    app.asyncRoute({ method: 'GET', url: '/bytes', handler: (_request, reply) => reply.finish(Buffer.from(BIG)) })
    app.asyncRoute({ method: 'GET', url: '/text', handler: (_request, reply) => reply.finish(BIG) })
    app.asyncRoute({ method: 'GET', url: '/off', compress: false, handler: (_request, reply) => reply.finish(BIG) })
  })
  const accept = { 'accept-encoding': 'gzip' }
  for (const path of ['/error', '/partial', '/no-transform', '/bytes', '/off']) {
    const res = await get(`${url}${path}`, accept)
    t.equal(res.headers['content-encoding'], undefined, path)
  }
  const head = await get(`${url}/head`, accept, 'HEAD')
  t.equal(head.headers['content-encoding'], undefined, 'HEAD')
  t.equal(head.raw.length, 0)
  const text = await get(`${url}/text`, accept)
  t.equal(text.headers['content-encoding'], 'gzip', 'threshold 0: even a small text')
  t.equal(text.headers.vary, 'Origin, accept-encoding', 'vary merged')
})

t.test('compress options are checked at register and at asyncRoute(); a route overrides the plugin', async (t) => {
  for (const [compress, name] of [[{ threshold: -1 }, 'compress.threshold'], [{ encodings: ['zstd'] }, 'compress.encodings'], [{ brotliQuality: 12 }, 'compress.brotliQuality'], [{ level: 10 }, 'compress.level'], [{ levle: 1 }, 'compress.levle'], ['yes', 'compress']] as const) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(asyncRoute, { compress } as never) }, { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: new RegExp(name.replace('.', '\\.')) }, name)
  }
  const app = Fastify()
  await app.register(asyncRoute)
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/', compress: { level: -1 }, handler: () => {} }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /compress\.level/ })
  app.asyncRoute({ method: 'GET', url: '/on', compress: { encodings: ['deflate'] }, handler: (_request, reply) => reply.finish(BIG) })
  app.asyncRoute({ method: 'GET', url: '/off', handler: (_request, reply) => reply.finish(BIG) })
  // app.inject(), as Fastify users test: the raw payload is the compressed one.
  const on = await app.inject({ url: '/on', headers: { 'accept-encoding': 'gzip, deflate' } })
  t.equal(on.headers['content-encoding'], 'deflate')
  t.equal(zlib.inflateSync(on.rawPayload).toString(), BIG)
  const off = await app.inject({ url: '/off', headers: { 'accept-encoding': 'gzip' } })
  t.equal(off.headers['content-encoding'], undefined, 'the plugin default: off')
  await app.close()
})

t.test('vary is merged once, an array included; a compressed stream cut by fail() ends truncated; the negotiation cache stays bounded', async (t) => {
  const { url } = await startApp(t, { compress: { threshold: 0 } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/already', handler: (_request, reply) => reply.header('vary', 'Origin, Accept-Encoding').finish('text') })
    app.asyncRoute({ method: 'GET', url: '/array', handler: (_request, reply) => reply.header('vary', ['Origin', 'Cookie']).finish('text') })
    asyncGet(app, '/cut', {
      async handler (_request, reply) {
        reply.header('content-type', 'text/plain')
        reply.write('x'.repeat(10_000))
        await reply.flush()
        reply.fail(new Error('broken mid-stream'))
      }
    })
  })
  const accept = { 'accept-encoding': 'gzip' }
  t.equal((await get(`${url}/already`, accept)).headers.vary, 'Origin, Accept-Encoding', 'not added twice')
  t.equal((await get(`${url}/array`, accept)).headers.vary, 'Origin, Cookie, accept-encoding')
  const cut = await new Promise<{ complete: boolean }>((resolve) => {
    http.get(`${url}/cut`, { headers: accept, agent: false }, (res) => {
      res.on('data', () => {})
      res.on('error', () => {})
      res.on('close', () => resolve({ complete: res.complete }))
    })
  })
  t.equal(cut.complete, false, 'the client sees a truncated answer, never a clean end')
  // A client invents accept-encoding values: the negotiation cache forgets rather than grows.
  const policy = resolveCompress(true, () => { throw new Error('valid') }) as NonNullable<ReturnType<typeof resolveCompress>>
  for (let i = 0; i < 1000; i++) negotiate(policy, `gzip;q=0.${i % 10}, x-${i}`)
  t.equal(negotiate(policy, 'gzip'), 'gzip')
  const cache = (policy.negotiator as unknown as { cache: Map<string, unknown> }).cache
  t.ok(cache === undefined || cache.size <= 256, `at most 256 remembered (${String(cache?.size)})`)
})
