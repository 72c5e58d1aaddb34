// app.close(): the grace for pending replies, what clients get when it runs out, keep-alive
// sockets, and what plain Fastify would do instead.
import http, { type IncomingMessage } from 'node:http'
import Fastify from 'fastify'
import t from 'tap'
import type { AsyncReply, AsyncRoutePluginOptions } from '../plugin/index.js'
import { CLOSING } from './helpers/answers.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute, type TestApp } from './helpers/app.js'
import { request, sendOnly, sleep, waitFor, type ClientResponse } from './helpers/client.js'
import type { Teardown } from './helpers/context.js'
import { startUpstream } from './helpers/upstream.js'

/** Starts `app.close()` and reports how long it took once it resolves. */
function timedClose (app: { close: () => Promise<unknown> }): { done: Promise<number>, settled: () => boolean } {
  const started = Date.now()
  let settled = false
  const done = app.close().then(() => {
    settled = true
    return Date.now() - started
  })
  return { done, settled: () => settled }
}

/** Resolves with 'closed' if `promise` settles within `ms`, else with 'pending'. */
async function within (promise: Promise<unknown>, ms: number): Promise<'closed' | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const result = await Promise.race([
    promise.then(() => 'closed' as const),
    new Promise<'pending'>((resolve) => { timer = setTimeout(resolve, ms, 'pending') })
  ])
  clearTimeout(timer)
  return result
}

function keepAliveAgent (test: Teardown): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  test.teardown(() => agent.destroy())
  return agent
}

/** `GET /` requested once, resolved when its handler holds the reply (which it never finishes). */
async function heldReply (test: Teardown, options: AsyncRoutePluginOptions): Promise<TestApp & { response: Promise<ClientResponse>, reply: AsyncReply }> {
  let theReply: AsyncReply | undefined
  const started = await startRoute(test, options, (request, reply) => { theReply = reply })
  const response = request(`${started.url}/`)
  await waitFor(() => theReply !== undefined, 2000, 'the handler')
  return { ...started, response, reply: theReply as AsyncReply }
}

// Lets Fastify start its close sequence (preClose) before the test acts during the grace.
const CLOSE_STARTS = 100

t.test('a pending reply that finishes within closeGrace sends its real answer, and close resolves soon after', async (t) => {
  const { app, response, reply: theReply } = await heldReply(t, { closeGrace: 3000, timeout: 10_000 })
  const close = timedClose(app)
  await sleep(CLOSE_STARTS + 100)
  t.equal(close.settled(), false, 'close waits for the pending reply')
  const finishedAt = Date.now()
  theReply?.finish('the real answer')
  const res = await response
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'the real answer')
  t.ok(res.complete)
  t.equal(res.headers.connection, 'close', 'a reply ending while closing ends its connection')
  await close.done
  const after = Date.now() - finishedAt
  t.ok(after < 1500, `close resolved ${after} ms after the finish, not at the end of the grace`)
  t.same(app.asyncRoute.stats(), { started: 1, finished: 1, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('a reply that never finishes gets 503 FST_ASYNC_ROUTE_CLOSING when closeGrace runs out', async (t) => {
  let entered = false
  const { url, app, logs } = await startRoute(t, { closeGrace: 200, timeout: 0 }, () => { entered = true })
  const response = request(`${url}/`, { timeout: 5000 })
  await waitFor(() => entered, 2000, 'the handler')
  const close = timedClose(app)
  const res = await response
  t.equal(res.statusCode, 503)
  t.same(JSON.parse(res.body), CLOSING)
  t.equal(res.headers.connection, 'close')
  const elapsed = await close.done
  t.ok(elapsed >= 190, `close waited for the grace (${elapsed} ms)`)
  t.ok(elapsed < 200 + 1500, `close resolved within closeGrace + about a second (${elapsed} ms)`)
  t.equal(logsAt(logs, LEVEL.error, 'closing').length, 1, 'the 503 is logged at error level')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 0, aborted: 0, failed: 1, rejected: 0, pending: 0 })
})

t.test('a streaming reply that never finishes has its socket cut when closeGrace runs out', async (t) => {
  let entered = false
  const { url, app } = await startRoute(t, { closeGrace: 200, timeout: 0 }, (request, reply) => {
    entered = true
    reply.write('data: 1\n\n')
  })
  const response = request(`${url}/`, { timeout: 5000 })
  await waitFor(() => entered, 2000, 'the handler')
  const close = timedClose(app)
  const res = await response
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'data: 1\n\n')
  t.equal(res.complete, false, 'truncated, never a clean end')
  const elapsed = await close.done
  t.ok(elapsed < 200 + 1500, `close resolved in ${elapsed} ms`)
})

t.test('with nothing pending, close does not wait for closeGrace', async (t) => {
  const { url, app } = await startRoute(t, { closeGrace: 10_000 }, (request, reply) => { reply.finish('ok') })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  const elapsed = await timedClose(app).done
  t.ok(elapsed < 500, `close resolved in ${elapsed} ms`)
})

t.test('a reply finishing during the grace on a keep-alive connection does not hold close open', async (t) => {
  const replies: AsyncReply[] = []
  const agent = keepAliveAgent(t)
  const { url, app } = await startRoute(t, { closeGrace: 5000, timeout: 0 }, (request, reply) => { replies.push(reply) }, { keepAliveTimeout: 60_000 })
  // A first exchange puts the connection in keep-alive mode.
  const first = request(`${url}/`, { agent })
  await waitFor(() => replies.length === 1, 2000, 'the first handler')
  replies[0]?.finish('first')
  t.equal((await first).headers.connection, 'keep-alive')

  const second = request(`${url}/`, { agent })
  await waitFor(() => replies.length === 2, 2000, 'the second handler')
  const close = timedClose(app)
  await sleep(CLOSE_STARTS)
  replies[1]?.finish({ last: true })
  const res = await second
  t.equal(res.statusCode, 200)
  t.same(JSON.parse(res.body), { last: true })
  t.equal(res.headers.connection, 'close', 'the answer ends its keep-alive connection')
  const state = await within(close.done, 3000)
  t.equal(state, 'closed', 'close resolved long before keepAliveTimeout')
  if (state === 'pending') agent.destroy()
})

t.test('a streaming reply finishing during the grace on a keep-alive connection ends that connection', async (t) => {
  let theReply: AsyncReply | undefined
  const agent = keepAliveAgent(t)
  const { url, app } = await startRoute(t, { closeGrace: 5000, timeout: 0 }, (request, reply) => {
    theReply = reply
    reply.write('head sent before close;')
  }, { keepAliveTimeout: 60_000 })
  const response = request(`${url}/`, { agent })
  await waitFor(() => theReply !== undefined, 2000, 'the handler')
  const close = timedClose(app)
  await sleep(CLOSE_STARTS)
  theReply?.finish(' finished while closing')
  const res = await response
  t.equal(res.body, 'head sent before close; finished while closing')
  t.ok(res.complete, 'the streamed answer ends cleanly')
  const state = await within(close.done, 3000)
  t.equal(state, 'closed', 'close resolved long before keepAliveTimeout')
  if (state === 'pending') agent.destroy()
})

t.test('a piped response completing during the grace on a keep-alive connection ends that connection', async (t) => {
  let release: (() => void) | undefined
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('upstream head;')
    release = () => res.end(' upstream tail')
  })
  t.teardown(() => upstream.close())
  const agent = keepAliveAgent(t)
  const { url, app } = await startRoute(t, { closeGrace: 5000, timeout: 0 }, (request, reply) => {
    void reply.pipe(upstream.url)
  }, { keepAliveTimeout: 60_000 })
  const response = request(`${url}/`, { agent })
  await waitFor(() => release !== undefined, 2000, 'the upstream request')
  const close = timedClose(app)
  await sleep(CLOSE_STARTS)
  release?.()
  const res = await response
  t.equal(res.body, 'upstream head; upstream tail')
  t.ok(res.complete)
  const state = await within(close.done, 3000)
  t.equal(state, 'closed', 'close resolved long before keepAliveTimeout')
  if (state === 'pending') agent.destroy()
})

t.test('new requests during close are refused as Fastify does', async (t) => {
  const { url, app, response: pending, reply: theReply } = await heldReply(t, { closeGrace: 5000, timeout: 0 })
  const close = timedClose(app)
  await sleep(CLOSE_STARTS)
  // The listener stays open during the grace (preClose), so Fastify itself answers.
  const refused = await request(`${url}/`, { timeout: 3000 })
  t.equal(refused.statusCode, 503, "Fastify's own 503")
  t.same(JSON.parse(refused.body), { error: 'Service Unavailable', message: 'Service Unavailable', statusCode: 503 })
  t.equal(refused.headers.connection, 'close')
  t.equal(app.asyncRoute.stats().started, 1, 'the new request never reached the async route')
  theReply?.finish('done')
  t.equal((await pending).body, 'done')
  await close.done
})

t.test('plain Fastify with hijack() waits on close forever; an async route does not', async (t) => {
  // Plain Fastify 5: a hijacked reply that never ends.
  const plain = Fastify()
  let hijacked = false
  plain.get('/', (request, reply) => {
    reply.hijack()
    hijacked = true
  })
  const plainUrl = await plain.listen({ port: 0, host: '127.0.0.1' })
  const plainReq = await sendOnly(`${plainUrl}/`)
  t.teardown(() => plainReq.destroy())
  await waitFor(() => hijacked, 2000, 'the plain handler')
  const plainClose = plain.close()
  t.equal(await within(plainClose, 500), 'pending', 'plain Fastify close() is still pending after 500 ms')
  plainReq.destroy()
  t.equal(await within(plainClose, 3000), 'closed', 'it resolves only once the client goes away')

  // The same hang as an async route, with no watchdog.
  let entered = false
  const { url, app } = await startRoute(t, { closeGrace: 200, timeout: 0 }, () => { entered = true })
  const response = request(`${url}/`)
  await waitFor(() => entered, 2000, 'the async handler')
  const close = timedClose(app)
  t.equal(await within(close.done, 200 + 1500), 'closed', 'the async route app closed within closeGrace + about a second')
  t.equal((await response).statusCode, 503)
})

t.test("close() does not wait on an upstream body nobody finished reading: the plugin's dispatcher is destroyed", async (t) => {
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('a body that never ends')
  })
  t.teardown(() => upstream.close())
  const { url, app } = await startRoute(t, { closeGrace: 5000, timeout: 0 }, async (request, reply) => {
    const res = await reply.fetch(upstream.url)
    reply.finish(`upstream said ${res.statusCode}`)
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'upstream said 200')
  t.equal(upstream.openSockets(), 1, 'the upstream connection is still busy with the endless body')
  const elapsed = await timedClose(app).done
  t.ok(elapsed < 3000, `close resolved in ${elapsed} ms`)
  await waitFor(() => upstream.openSockets() === 0, 2000, 'the upstream socket to close')
  t.pass('the upstream connection was closed')
})

t.test('an upstream request in flight when the grace runs out is cancelled', async (t) => {
  const upstream = await startUpstream(() => {})
  t.teardown(() => upstream.close())
  const { url, app } = await startRoute(t, { closeGrace: 200, timeout: 0 }, (request, reply) => {
    reply.fetch(upstream.url, (err, res) => {
      if (err !== null) return reply.fail(err)
      reply.finish(String(res.statusCode))
    })
  })
  const response = request(`${url}/`)
  await waitFor(() => upstream.requests.length === 1, 2000, 'the upstream request')
  const close = timedClose(app)
  const res = await response
  t.equal(res.statusCode, 503)
  await new Promise<void>((resolve) => {
    const socket = (upstream.requests[0] as IncomingMessage).socket
    if (socket.destroyed) resolve()
    else socket.once('close', () => resolve())
  })
  t.pass('the upstream saw its request socket closed')
  t.ok(await close.done < 200 + 1500)
})

t.test('with forceCloseConnections, replies ended by the close grace still get their 503', async (t) => {
  const { url, app } = await startRoute(t, { closeGrace: 100 }, () => {}, { forceCloseConnections: true })
  const answers = [request(`${url}/`), request(`${url}/`)]
  await waitFor(() => app.asyncRoute.pending().length === 2, 2000, 'both replies')
  await app.close()
  for (const answer of await Promise.all(answers)) {
    t.equal(answer.statusCode, 503)
    t.equal(JSON.parse(answer.body).code, 'FST_ASYNC_ROUTE_CLOSING')
  }
})

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
    asyncGet(app, '/late', {
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

t.test('close() resolves, never rejects, when pluginTimeout is far below closeGrace', async (t) => {
  let answered = false
  const { app, url } = await startApp(t, { closeGrace: 3000, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler () {} })
    asyncGet(app, '/late', {
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

t.test('with pluginTimeout 0 (no hook limit) the grace is waited for in preClose as before', async (t) => {
  const { app, url } = await startRoute(t, { closeGrace: 200, timeout: 0 }, () => {}, { pluginTimeout: 0 })
  const hanging = request(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  await t.resolves(app.close())
  t.equal((await hanging).statusCode, 503)
})
