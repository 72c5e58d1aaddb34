// Over HTTP/2, ending one reply abnormally must reset only its own stream: the client's
// session, and every other stream on it, carry on.
import http2 from 'node:http2'
import t from 'tap'
import { asyncGet, closeTimed, startApp, startRoute } from './helpers/app.js'
import { sleep, waitFor } from './helpers/client.js'
import { H2C, h2get, h2session, type H2Response } from './helpers/h2.js'

t.test('HTTP/2: a watchdog firing after the head resets only that stream', async (t) => {
  const { url } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/stuck', {
      handler (_request, reply) {
        reply.write('partial')
      }
    })
    asyncGet(app, '/slow', {
      handler (_request, reply) {
        setTimeout(() => reply.finish('whole'), 250)
      }
    })
  }, H2C)
  const session = h2session(t, url)

  const [stuck, slow] = await Promise.all([h2get(session, '/stuck'), h2get(session, '/slow').catch((e: Error) => e)])
  t.equal(stuck.status, 200, 'the head had been sent')
  t.equal(stuck.body, 'partial')
  t.equal(stuck.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, 'the stream was reset, not ended cleanly')
  t.notOk(session.destroyed, 'the session survives')
  t.equal((slow as H2Response).status, 504, 'the other stream got its own watchdog answer')

  const after = await h2get(session, '/stuck')
  t.equal(after.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, 'a new stream on the same session works')
})

t.test('HTTP/2: finish() and fail() answer over a stream like over HTTP/1', async (t) => {
  const { url } = await startApp(t, { timeout: 1000 }, (app) => {
    asyncGet(app, '/ok', {
      handler (_request, reply) {
        setTimeout(() => reply.finish({ ok: true }), 10)
      }
    })
    asyncGet(app, '/fail', {
      handler (_request, reply) {
        setTimeout(() => reply.fail(Object.assign(new Error('gone'), { statusCode: 410 })), 10)
      }
    })
  }, H2C)
  const session = h2session(t, url)
  const ok = await h2get(session, '/ok')
  t.equal(ok.status, 200)
  t.same(JSON.parse(ok.body), { ok: true })
  const failed = await h2get(session, '/fail')
  t.equal(failed.status, 410)
  t.same(JSON.parse(failed.body), { statusCode: 410, error: 'Gone', message: 'gone' })
})

t.test('HTTP/2: a client cancelling its stream aborts that reply only', async (t) => {
  let closed = 0
  let aborted = false
  const { url, app } = await startApp(t, { timeout: 2000 }, (app) => {
    asyncGet(app, '/held', {
      handler (_request, reply) {
        reply.onClose(() => { closed++ })
        reply.signal.addEventListener('abort', () => { aborted = true })
        void reply.flush()
      }
    })
    asyncGet(app, '/ok', {
      handler (_request, reply) {
        setTimeout(() => reply.finish('still here'), 10)
      }
    })
  }, H2C)
  const session = h2session(t, url)
  const held = session.request({ ':path': '/held' })
  held.on('error', () => {})
  await new Promise((resolve) => held.once('response', resolve))
  held.close(http2.constants.NGHTTP2_CANCEL)
  const deadline = Date.now() + 2000
  while (app.asyncRoute.stats().aborted === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(app.asyncRoute.stats().aborted, 1, 'counted as aborted')
  t.equal(closed, 1, 'onClose ran once')
  t.ok(aborted, 'signal aborted')
  const ok = await h2get(session, '/ok')
  t.equal(ok.body, 'still here', 'the session carries on')
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

t.test('HTTP/2: close() does not wait for an idle client session; a reply pending on a session still gets its answer', async (t) => {
  const { url, app } = await startApp(t, { closeGrace: 2000 }, (app) => {
    asyncGet(app, '/now', { handler (_request, reply) { reply.finish('now') } })
    asyncGet(app, '/soon', { handler (_request, reply) { setTimeout(() => reply.finish('soon'), 200) } })
  }, H2C)
  const idle = h2session(t, url)
  t.equal((await h2get(idle, '/now')).body, 'now')
  const busy = h2session(t, url)
  const pending = h2get(busy, '/soon')
  await waitFor(() => app.asyncRoute.pending().length === 1, 2000, 'the reply to be pending')
  // (Before the sessions were closed, an idle one held close() for Fastify's
  // http2SessionTimeout, 72 s, on Node 20 and 22.)
  const took = await closeTimed(app)
  const answer = await pending
  t.equal(answer.status, 200)
  t.equal(answer.body, 'soon', 'the pending reply finished within the grace, on its session')
  t.ok(took >= 150 && took < 1500, `close() waited for the pending reply only (${took} ms)`)
  await waitFor(() => idle.closed && busy.closed, 2000, 'both client sessions to be closed by the server')
  t.pass('the server closed both sessions')
})

t.test('HTTP/2 close under hostile sessions: many idle ones, some cut by the client, one whose reply never finishes', async (t) => {
  const { url, app } = await startApp(t, { closeGrace: 300, timeout: 0 }, (app) => {
    asyncGet(app, '/now', { handler (_request, reply) { reply.finish('now') } })
    asyncGet(app, '/never', { handler () {} })
  }, H2C)
  const sessions = Array.from({ length: 20 }, () => h2session(t, url))
  await Promise.all(sessions.map(async (session) => await h2get(session, '/now')))
  // Half of them the client cuts without a GOAWAY (their sockets just go).
  for (const session of sessions.slice(0, 10)) session.destroy()
  const stuck = h2session(t, url)
  const never = h2get(stuck, '/never')
  await waitFor(() => app.asyncRoute.pending().length === 1, 2000, 'the reply to be pending')
  const took = await closeTimed(app)
  t.ok(took >= 250 && took < 2000, `close() waited for the grace only (${took} ms)`)
  const answer = await never
  t.equal(answer.status, 503, 'the unfinished reply got the close answer')
  await waitFor(() => [...sessions, stuck].every((session) => session.closed || session.destroyed), 2000, 'every client session to be closed')
  t.pass('every session closed, the cut ones included')
})
