// A client that leaves: before finish() (abort, onClose, cancelled upstream), and after
// finish() (nothing happens).
import type { IncomingMessage } from 'node:http'
import t from 'tap'
import type { AsyncReply } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute, type LogLine } from './helpers/app.js'
import { openRequest, request, sendOnly, sleep, waitFor } from './helpers/client.js'
import { socketClosed, startUpstream } from './helpers/upstream.js'

function codeOf (value: unknown): unknown {
  return (value as { code?: unknown } | undefined)?.code
}

t.test('client leaving before finish: signal aborts, onClose callbacks run once, the upstream request is cancelled', async (t) => {
  const upstream = await startUpstream(() => {})
  t.teardown(() => upstream.close())
  const calls: string[] = []
  let abortReason: unknown
  let abortEvents = 0
  let fetchError: unknown
  let theReply: AsyncReply | undefined
  const { url, app, logs } = await startRoute(t, { timeout: 5000 }, (request, reply) => {
    theReply = reply
    reply.signal.addEventListener('abort', () => {
      abortEvents++
      abortReason = reply.signal.reason
    })
    reply
      .onClose(() => calls.push('first'))
      .onClose(() => { calls.push('throwing'); throw new Error('onClose broke') })
      .onClose(() => calls.push('third'))
    reply.fetch(upstream.url, (err, res) => {
      fetchError = err !== null ? err : `unexpected response ${res.statusCode}`
    })
  })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => upstream.requests.length === 1, 3000, 'the upstream request')
  t.equal(theReply?.signal.aborted, false, 'not aborted while the client is there')
  req.destroy()
  await socketClosed(upstream.requests[0] as IncomingMessage)
  t.pass('the upstream saw its request socket closed')
  await waitFor(() => calls.length >= 3 && fetchError !== undefined, 3000, 'the callbacks')
  await sleep(100)
  t.same(calls, ['first', 'throwing', 'third'], 'every onClose callback ran, once, in order, despite the throw')
  t.equal(abortEvents, 1, 'signal aborted once')
  t.equal(codeOf(abortReason), 'FST_ASYNC_ROUTE_CLIENT_GONE')
  t.ok(fetchError instanceof Error, 'the cancelled fetch called back with an error')
  const thrown = logsAt(logs, LEVEL.error, 'onClose() callback threw')
  t.equal(thrown.length, 1, 'the throwing callback is logged')
  t.match((thrown[0] as LogLine).err, { message: 'onClose broke' })
  t.equal(theReply?.finished, true)
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 0, aborted: 1, failed: 0, rejected: 0, pending: 0 })
  t.same(app.asyncRoute.pending(), [])
})

t.test('write(), finish() and fail() after the client left are ignored quietly', async (t) => {
  let theReply: AsyncReply | undefined
  let requestId: string | undefined
  const results: unknown[] = []
  const { url, app, logs } = await startRoute(t, { timeout: 5000 }, (request, reply) => {
    requestId = request.id
    theReply = reply
    reply.write('some')
    reply.onClose(() => {
      // Right inside the close callback...
      results.push(reply.write('more'))
      reply.finish('done')
    })
  })
  const { req, res } = await openRequest(`${url}/`)
  res.resume()
  await waitFor(() => theReply !== undefined, 2000, 'the handler')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  // ...and later, from an unrelated callback.
  let threw: unknown = null
  try {
    results.push(theReply?.write(Buffer.from('late')))
    theReply?.finish({ late: true })
    theReply?.fail(new Error('late failure'))
    await theReply?.flush()
  } catch (error) {
    threw = error
  }
  t.equal(threw, null, 'nothing throws')
  t.same(results, [false, false], 'write() reports nothing was written')
  const mine = logs.filter((line) => line.reqId === requestId)
  t.same(mine.filter((line) => line.level > LEVEL.debug && line.level !== LEVEL.info), [], 'nothing above debug level')
  t.ok(mine.some((line) => line.level === LEVEL.debug && /after the reply ended/.test(line.msg)), 'the late calls are logged at debug')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 0, aborted: 1, failed: 0, rejected: 0, pending: 0 },
    'the late finish() is not counted')
})

t.test('a client leaving after finish() was called, during a large body, triggers nothing', async (t) => {
  const size = 32 * 1024 * 1024
  let signal: AbortSignal | undefined
  let onCloseRan = false
  let rawClosed = false
  const { url, app, logs } = await startApp(t, { timeout: 5000 }, (app) => {
    asyncGet(app, '/big', {
      handler (request, reply) {
        signal = reply.signal
        reply.onClose(() => { onCloseRan = true })
        reply.raw.on('close', () => { rawClosed = true })
        reply.finish(Buffer.alloc(size, 'x'))
      }
    })
  })
  const { req, res } = await openRequest(`${url}/big`)
  t.equal(res.headers['content-length'], String(size))
  const received = await new Promise<number>((resolve) => res.once('data', (chunk: Buffer) => {
    // Stop reading: the rest of the body stays in the socket buffers.
    res.pause()
    resolve(chunk.length)
  }))
  req.destroy()
  t.ok(received < size, `the client left in the middle of the body (${received} of ${size} bytes)`)
  await waitFor(() => rawClosed, 3000, 'the server side to see the close')
  await sleep(50)
  t.equal(onCloseRan, false, 'onClose did not run')
  t.equal(signal?.aborted, false, 'signal did not abort')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 1, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 },
    'counted as finished')
  t.same(logsAt(logs, LEVEL.warn), [])
  t.same(logsAt(logs, LEVEL.error), [])
})

t.test('signal never aborts after a normal finish', async (t) => {
  let before: AbortSignal | undefined
  let theReply: AsyncReply | undefined
  const { url } = await startRoute(t, { timeout: 200 }, (request, reply) => {
    theReply = reply
    before = reply.signal
    reply.status(204).finish()
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  // The connection is closed by now (no keep-alive agent), and the watchdog would have fired.
  await sleep(300)
  t.equal(before?.aborted, false, 'read before finish: not aborted')
  t.equal(theReply?.signal.aborted, false, 'the same signal afterwards')
  t.equal(theReply?.finished, true)
})

t.test('signal read for the first time after the client left is already aborted; later onClose never runs', async (t) => {
  let theReply: AsyncReply | undefined
  let lateOnClose = false
  const { url, app } = await startRoute(t, { timeout: 5000 }, (request, reply) => { theReply = reply })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => theReply !== undefined, 2000, 'the handler')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  const signal = theReply?.signal as AbortSignal
  t.equal(signal.aborted, true)
  t.equal(codeOf(signal.reason), 'FST_ASYNC_ROUTE_CLIENT_GONE')
  t.equal(theReply?.onClose(() => { lateOnClose = true }), theReply, 'onClose stays chainable')
  await sleep(100)
  t.equal(lateOnClose, false, 'an onClose registered after the end never runs')
  t.throws(() => theReply?.onClose('nope' as unknown as () => void), TypeError)
})

t.test('client leaving during the upstream step cancels it; the handler is never called', async (t) => {
  const upstream = await startUpstream(() => {})
  t.teardown(() => upstream.close())
  let handlerCalled = false
  const { url, app } = await startRoute(t, { timeout: 5000 }, {
    upstream: upstream.url,
    handler (request, reply) {
      handlerCalled = true
      reply.finish()
    }
  })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => upstream.requests.length === 1, 3000, 'the upstream request')
  req.destroy()
  await socketClosed(upstream.requests[0] as IncomingMessage)
  t.pass('the upstream saw its request socket closed')
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  await sleep(50)
  t.equal(handlerCalled, false)
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 0, aborted: 1, failed: 0, rejected: 0, pending: 0 })
})

t.test('a client that left while hooks ran ends the reply as aborted before the handler', async (t) => {
  let handlerCalled = false
  let hookEntered = false
  const { url, app } = await startRoute(t, { timeout: 5000 }, {
    async preHandler (request, reply) {
      hookEntered = true
      // Hold the request until its client is gone.
      if (!reply.raw.destroyed) await new Promise((resolve) => reply.raw.once('close', resolve))
    },
    handler (request, reply) {
      handlerCalled = true
      reply.finish()
    }
  })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => hookEntered, 2000, 'the hook')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().started === 1, 2000, 'the route to start')
  t.equal(handlerCalled, false, 'the handler is not called for a client already gone')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 0, aborted: 1, failed: 0, rejected: 0, pending: 0 })
})

t.test('a client that leaves first is logged once at info level, nothing above', async (t) => {
  const { url, logs, app } = await startRoute(t, {}, () => {})
  const req = await sendOnly(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  t.equal(logsAt(logs, LEVEL.info, 'client closed the connection').length, 1)
  t.equal(logs.filter((line) => line.level > LEVEL.info).length, 0)
})
