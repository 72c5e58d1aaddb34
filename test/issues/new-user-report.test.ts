// Regressions from a new user's report: close() with the defaults, a fire-and-forget fetch,
// requests undici refuses before connecting, and a hang report that blamed a streaming reply.
import t from 'tap'
import { LEVEL, logsAt, startApp } from '../helpers/app.js'
import { request, sendOnly, sleep, waitFor } from '../helpers/client.js'
import { upstreamFor } from '../helpers/upstream.js'

t.test('close() resolves, never rejects, when pluginTimeout is far below closeGrace', async (t) => {
  let answered = false
  const { app, url } = await startApp(t, { closeGrace: 3000, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler () {} })
    app.asyncRoute({
      method: 'GET',
      url: '/late',
      handler (request, reply) { setTimeout(() => { answered = true; reply.finish('late but whole') }, 1500) }
    })
  }, { pluginTimeout: 1000 })
  const hanging = request(`${url}/`, { timeout: 6000 })
  const late = request(`${url}/late`, { timeout: 6000 })
  await waitFor(() => app.asyncRoute.stats().pending === 2, 2000, 'both replies pending')
  const started = Date.now()
  await t.resolves(app.close(), 'close() resolves')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 2500 && elapsed < 3000 + 1500, `after the whole grace, not at pluginTimeout (${elapsed} ms)`)
  t.ok(answered, 'a reply finishing after pluginTimeout but within the grace still answered')
  t.equal((await late).body, 'late but whole')
  const res = await hanging
  t.equal(res.statusCode, 503)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_CLOSING')
})

t.test('a fire-and-forget fetch whose reply ended first is not an unhandled rejection; awaiting one still throws', async (t) => {
  const up = await upstreamFor(t, (_req, res) => setTimeout(() => res.end('late'), 100))
  let awaited: unknown
  const { url } = await startApp(t, { timeout: 50 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/forget',
      handler (_request, reply) {
        void reply.fetch(up.url)
        reply.finish('done')
      }
    })
    app.asyncRoute({ method: 'GET', url: '/watchdog', handler (_request, reply) { void reply.fetch(up.url) } })
    app.asyncRoute({
      method: 'GET',
      url: '/after',
      handler (_request, reply) {
        reply.finish('first')
        // A fetch on an ended reply is refused at once: the same "your reply ended" rejection.
        void reply.fetch(up.url)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/awaited',
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
      t.same(JSON.parse(res.body), {
        statusCode: 500,
        code: 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST',
        error: 'Internal Server Error',
        message: 'The upstream request is invalid'
      }, `${name}: the contract's answer`)
    }
  }
  t.equal(up.connections(), 0, 'nothing reached the upstream')
  const errors = logsAt(logs, LEVEL.error, 'The upstream request is invalid')
  t.equal(errors.length, 8, 'each logged at error level')
  t.match(JSON.stringify(errors[0]), /transfer-encoding|invalid/i, "with undici's reason")
  t.equal(logsAt(logs, LEVEL.error, 'upstream request failed').length, 0, 'never as an upstream failure')
})

t.test('the hang report of a streaming reply says it was streaming, not that finish() was forgotten', async (t) => {
  const { url, logs } = await startApp(t, { timeout: 150 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      handler (_request, reply) { reply.write('x'.repeat(208)) }
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.complete, false, 'the stream was cut')
  const [line] = logsAt(logs, LEVEL.warn, 'not finished')
  t.match(String(line?.msg), /streaming: 208 bytes written, the last \d+ ms ago/)
  t.notMatch(String(line?.msg), /forgotten/)
})

t.test('a client that leaves first is logged once at info level, nothing above', async (t) => {
  const { url, logs, app } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler () {} })
  })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  t.equal(logsAt(logs, LEVEL.info, 'client closed the connection').length, 1)
  t.equal(logs.filter((line) => line.level > LEVEL.info).length, 0)
})

t.test('with pluginTimeout 0 (no hook limit) the grace is waited for in preClose as before', async (t) => {
  const { app, url } = await startApp(t, { closeGrace: 200, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler () {} })
  }, { pluginTimeout: 0 })
  const hanging = request(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  await t.resolves(app.close())
  t.equal((await hanging).statusCode, 503)
})
