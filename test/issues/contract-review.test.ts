// Regressions from a contract review (commit 60d7a8a, "fixes from a contract review"): replies
// that start while close() runs, an error answer Node refuses to write, flush() under pressure,
// and HTTP/2 flush and cancellation during hooks. The ECONNRESET mid-body mapping of the same
// review is in fetch.test.ts (mid-body failure table).
import http2 from 'node:http2'
import t from 'tap'
import { LEVEL, logsAt, startApp, startRoute } from '../helpers/app.js'
import { openRequest, request, sleep, waitFor } from '../helpers/client.js'
import { H2C, h2session } from '../helpers/h2.js'

t.test('a reply whose hooks were still running when close() began with nothing pending gets 503, and close does not wait for it', async (t) => {
  let hookEntered!: () => void
  const inHook = new Promise<void>((resolve) => { hookEntered = resolve })
  const { url, app } = await startRoute(t, { timeout: 0, closeGrace: 5000 }, {
    async onRequest () {
      hookEntered()
      await sleep(150)
    },
    handler () {
      // Never finishes: only close() can end it.
    }
  })
  const answer = request(`${url}/`)
  await inHook
  const started = Date.now()
  const closed = app.close()
  const res = await answer
  await closed
  t.equal(res.statusCode, 503)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_CLOSING')
  t.equal(res.headers.connection, 'close')
  t.ok(Date.now() - started < 2000, 'close() resolved without the grace or a watchdog')
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('a reply whose hooks were still running when close() began shares the grace of the others', async (t) => {
  let hookEntered!: () => void
  const inHook = new Promise<void>((resolve) => { hookEntered = resolve })
  const { url, app } = await startApp(t, { timeout: 0, closeGrace: 2000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/held', handler (_request, reply) { setTimeout(() => reply.finish('held'), 400) } })
    app.asyncRoute({
      method: 'GET',
      url: '/late',
      async onRequest () {
        hookEntered()
        await sleep(100)
      },
      handler (_request, reply) {
        setTimeout(() => reply.finish('late but in time'), 100)
      }
    })
  })
  const held = request(`${url}/held`)
  await waitFor(() => app.asyncRoute.pending().length === 1, 2000, 'the held reply')
  const late = request(`${url}/late`)
  await inHook
  const closed = app.close()
  t.equal((await late).body, 'late but in time')
  t.equal((await held).body, 'held')
  await closed
  t.same(app.asyncRoute.stats(), { started: 2, finished: 2, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('an error answer whose head Node refuses cuts the connection instead of crashing', async (t) => {
  const { url, app, logs } = await startRoute(t, { timeout: 100 }, {
    onRequest (_request, reply, done) {
      // Fastify does not check header values: Node refuses this one at writeHead().
      reply.header('x-broken', 'line\nbreak')
      done()
    },
    handler () {}
  })
  const res = await request(`${url}/`).catch((error: Error) => error)
  t.ok(res instanceof Error, 'the connection was cut before any head')
  t.equal(logsAt(logs, LEVEL.error, 'the error answer could not be sent').length, 1)
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

t.test('many flush() calls waiting on one full buffer share one drain listener', async (t) => {
  let listeners = -1
  let settled = 0
  const { url } = await startRoute(t, { timeout: 3000 }, (_request, reply) => {
    reply.write(Buffer.alloc(32 * 1024 * 1024))
    const before = reply.raw.listenerCount('drain')
    const waits = Array.from({ length: 20 }, () => reply.flush().then(() => { settled++ }))
    listeners = reply.raw.listenerCount('drain') - before
    void Promise.all(waits).then(() => reply.finish())
  })
  const { res } = await openRequest(`${url}/`)
  await waitFor(() => listeners >= 0, 2000, 'the handler')
  t.equal(listeners, 1, 'one drain listener for twenty waiting flush() calls')
  t.equal(settled, 0, 'nothing resolved while the client does not read')
  res.resume()
  await new Promise((resolve) => res.on('end', resolve))
  t.equal(settled, 20, 'all resolved once drained')
})

t.test('HTTP/2: flush() waits for the stream to drain', async (t) => {
  let flushed = false
  const { url } = await startRoute(t, { timeout: 5000 }, (_request, reply) => {
    reply.write(Buffer.alloc(4 * 1024 * 1024))
    void reply.flush().then(() => {
      flushed = true
      reply.finish()
    })
  }, H2C)
  const session = h2session(t, url)
  const req = session.request({ ':path': '/' })
  req.on('error', () => {})
  req.pause()
  await new Promise((resolve) => req.once('response', resolve))
  await sleep(200)
  t.notOk(flushed, 'flush() still waits while the client reads nothing')
  let bytes = 0
  req.on('data', (chunk: Buffer) => { bytes += chunk.length })
  req.resume()
  await new Promise((resolve) => req.on('end', resolve))
  t.ok(flushed)
  t.equal(bytes, 4 * 1024 * 1024)
})

t.test('HTTP/2: a stream cancelled while hooks ran counts as a client abort', async (t) => {
  const client = { cancel: () => {} }
  const { url, app } = await startRoute(t, { timeout: 0, closeGrace: 200 }, {
    async onRequest () {
      client.cancel()
      await sleep(100)
    },
    handler () {}
  }, H2C)
  const session = h2session(t, url)
  const req = session.request({ ':path': '/' })
  req.on('error', () => {})
  client.cancel = () => req.close(http2.constants.NGHTTP2_CANCEL)
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort to be counted')
  t.same(app.asyncRoute.pending(), [])
})
