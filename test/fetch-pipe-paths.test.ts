// The paths of `reply.fetch()` + `reply.pipe(res)` written for speed, over real sockets:
// undici's callback form (an invalid URL that undici throws on at once), the body relayed with
// its own backpressure (pause on a full socket, resume on 'drain'), and a response the handler
// fetched without the plugin, piped and then cut short by finish().
import { createHash, randomBytes } from 'node:crypto'
import t from 'tap'
import { request as undiciRequest } from 'undici'
import { startApp } from './helpers/app.js'
import { openRequest, request, sleep, waitFor } from './helpers/client.js'
import { refusedOrigin, upstreamFor } from './helpers/upstream.js'

t.test('reply.fetch() of a URL undici cannot parse rejects with the upstream error, and the reply answers 502', async (t) => {
  let calledBack = null as { code?: string } | null
  const { url, app } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/callback',
      handler (_request, reply) {
        reply.fetch('not a url', (err) => {
          calledBack = err as { code?: string }
          reply.finish('called back')
        })
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/escapes',
      async handler (_request, reply) {
        await reply.fetch('not a url')
        reply.finish('never')
      }
    })
  })
  const escaped = await request(`${url}/escapes`)
  t.equal(escaped.statusCode, 502)
  t.equal(JSON.parse(escaped.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  t.notMatch(escaped.body, 'not a url', 'the URL is not echoed to the client')
  const res = await request(`${url}/callback`)
  t.equal(res.body, 'called back')
  t.equal(calledBack?.code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  t.match(app.asyncRoute.stats(), { started: 2, finished: 1, failed: 1, pending: 0 })
})

// As in pipe.test.ts: the loopback buffers of both hops absorb about 8 MB, so the body must be
// well beyond that for the client's pause to reach the upstream.
t.test('fetch + pipe(res) of a 32 MiB body: a paused client stops the upstream, then gets every byte', async (t) => {
  const TOTAL = 32 * 1024 * 1024
  const CHUNK = 64 * 1024
  const source = randomBytes(TOTAL)
  const expected = createHash('sha256').update(source).digest('hex')
  let written = 0
  let blocked = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', TOTAL)
    const pump = (): void => {
      while (written < TOTAL) {
        const chunk = source.subarray(written, written + CHUNK)
        written += chunk.length
        if (!res.write(chunk)) {
          blocked = true
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    pump()
  })
  let piped = false
  const { url, app } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        await reply.pipe(await reply.fetch(up.url))
        piped = true
      }
    })
  })
  const { res } = await openRequest(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-length'], String(TOTAL))
  await waitFor(() => blocked, 5000, 'the upstream to feel backpressure')
  let last = -1
  await waitFor(() => {
    const settled = written === last
    last = written
    return settled
  }, 5000, 'the upstream to stop writing')
  await sleep(100)
  t.ok(written < TOTAL, `the upstream is stuck at ${written} of ${TOTAL} bytes while the client is paused`)
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
  await waitFor(() => piped, 2000, 'pipe() to resolve')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 1, pending: 0 })
})

t.test('a response fetched without the plugin, piped and then cut short by finish(): the rest is dropped, nothing throws', async (t) => {
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
  let pipeDone = false
  const { url, app, logs } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        // undici's own request, not reply.fetch(): the plugin does not track this body.
        const res = await undiciRequest(up.url)
        const piping = reply.pipe(res)
        await new Promise((resolve) => setTimeout(resolve, 50))
        reply.finish()
        sendRest?.()
        await piping
        pipeDone = true
      }
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'first;', 'the response ends at finish(): what came after is not written')
  t.ok(res.complete, 'and it ended cleanly')
  await waitFor(() => restSent && pipeDone, 2000, 'the upstream to end and pipe() to resolve')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 1, failed: 0, pending: 0 })
  t.same(logs.filter((line) => line.level >= 40), [], 'nothing was logged as a warning or an error')
})

t.test('fetch + pipe(res) of an upstream that dies mid-body: the client connection is cut, never cleanly ended', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.write('part of the body;')
    setTimeout(() => res.destroy(), 50)
  })
  let piped = false
  const { url, app } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        await reply.pipe(await reply.fetch(up.url))
        piped = true
      }
    })
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 200)
  t.notOk(res.complete, 'the response is truncated')
  t.equal(res.body, 'part of the body;')
  await waitFor(() => piped, 2000, 'pipe() to resolve')
  t.match(app.asyncRoute.stats(), { started: 1, finished: 0, failed: 1, pending: 0 })
})

t.test('reply.fetch() of a URL that is not http: is refused before connecting (500); an https: origin that refuses fails with the upstream error', async (t) => {
  const refused = (await refusedOrigin()).replace('http:', 'https:')
  const codes: Record<string, string | undefined> = {}
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/:which',
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
