// What an operator can see of async replies: pending(), stats(), diagnostics_channel, and the
// warnUnfinished hint.
import diagnostics from 'node:diagnostics_channel'
import http from 'node:http'
import util from 'node:util'
import t from 'tap'
import type { AsyncReply, HangReport, PendingReply } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute, type LogLine } from './helpers/app.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'
import { startUpstream } from './helpers/upstream.js'

const FORGOT = 'did you forget reply.finish()?'

t.test('pending() lists unfinished replies with their in-flight upstream requests, and is empty afterwards', async (t) => {
  let answer: (() => void) | undefined
  const upstream = await startUpstream((req, res) => {
    answer = () => res.end('upstream body')
  })
  t.teardown(() => upstream.close())
  const ids: string[] = []
  const { url, app } = await startApp(t, { timeout: 10_000 }, (app) => {
    asyncGet(app, '/proxy', {
      handler (request, reply) {
        ids.push(request.id)
        reply.fetch(`${upstream.origin}/data?page=3`, (err, res) => {
          if (err !== null) return reply.fail(err)
          res.body.text().then((text) => reply.finish(text), (error: unknown) => reply.fail(error))
        })
      }
    })
    app.asyncRoute({
      method: 'POST',
      url: '/stream',
      handler (request, reply) {
        ids.push(request.id)
        reply.write('started')
        setTimeout(() => reply.finish(), 400)
      }
    })
  })
  t.same(app.asyncRoute.pending(), [], 'nothing pending at first')
  const proxied = request(`${url}/proxy?q=1`)
  await waitFor(() => answer !== undefined, 2000, 'the upstream request')
  const streamed = request(`${url}/stream`, { method: 'POST' })
  await waitFor(() => app.asyncRoute.pending().length === 2, 2000, 'two pending replies')

  const pending = app.asyncRoute.pending()
  const proxy = pending.find((entry) => entry.url === '/proxy?q=1') as PendingReply
  t.same(Object.keys(proxy).sort(), ['ageMs', 'handlerSettled', 'headersSent', 'id', 'inflight', 'method', 'url'])
  t.equal(proxy.id, ids[0])
  t.equal(proxy.method, 'GET')
  t.ok(proxy.ageMs >= 0 && proxy.ageMs < 5000, `ageMs ${proxy.ageMs}`)
  t.equal(proxy.headersSent, false)
  t.equal(proxy.handlerSettled, true, 'the handler returned, the reply waits on its callback')
  t.equal(proxy.inflight.length, 1)
  t.equal(proxy.inflight[0]?.method, 'GET')
  t.equal(proxy.inflight[0]?.url, `${upstream.origin}/data?page=3`)
  t.ok((proxy.inflight[0]?.ageMs ?? -1) >= 0)

  const stream = pending.find((entry) => entry.url === '/stream') as PendingReply
  t.equal(stream.id, ids[1])
  t.equal(stream.method, 'POST')
  t.equal(stream.headersSent, true)
  t.same(stream.inflight, [])

  await sleep(50)
  const later = app.asyncRoute.pending().find((entry) => entry.url === '/proxy?q=1') as PendingReply
  t.ok(later.ageMs >= proxy.ageMs + 40, 'ageMs grows')

  answer?.()
  t.equal((await proxied).body, 'upstream body')
  t.equal((await streamed).body, 'started')
  t.same(app.asyncRoute.pending(), [], 'empty once every reply ended')
})

t.test('pending() lists open replies oldest first, whichever of them end: the first, the last or one between', async (t) => {
  const open = new Map<string, AsyncReply>()
  const { url, app } = await startApp(t, { timeout: 10_000 }, (app) => {
    asyncGet(app, '/hold', (request, reply) => {
      open.set((request.query as { n: string }).n, reply)
    })
  })
  const answers = new Map<string, Promise<unknown>>()
  const hold = async (n: string): Promise<void> => {
    answers.set(n, request(`${url}/hold?n=${n}`))
    await waitFor(() => open.has(n), 2000, `reply ${n}`)
  }
  const listed = (): string[] => app.asyncRoute.pending().map((entry) => entry.url.slice('/hold?n='.length))
  const end = async (n: string): Promise<void> => {
    open.get(n)?.finish(n)
    await answers.get(n)
  }
  for (const n of ['1', '2', '3', '4', '5']) await hold(n)
  t.same(listed(), ['1', '2', '3', '4', '5'], 'in the order they started')
  await end('3')
  t.same(listed(), ['1', '2', '4', '5'], 'one between ended')
  await end('1')
  t.same(listed(), ['2', '4', '5'], 'the oldest ended')
  await end('5')
  t.same(listed(), ['2', '4'], 'the newest ended')
  await hold('6')
  t.same(listed(), ['2', '4', '6'], 'a new reply comes last')
  await end('2')
  await end('6')
  await end('4')
  t.same(listed(), [], 'none once all ended')
  await hold('7')
  t.same(listed(), ['7'], 'and the list starts again')
  await end('7')
  t.same(app.asyncRoute.stats().pending, 0)
  t.equal(app.asyncRoute.stats().finished, 7)
})

t.test('a reply logged or inspected shows no other request', async (t) => {
  const open = new Map<string, AsyncReply>()
  const { url } = await startApp(t, { timeout: 10_000 }, (app) => {
    asyncGet(app, '/hold', (request, reply) => {
      open.set((request.query as { n: string }).n, reply)
    })
  })
  const answers = ['other-client-secret', 'mine', 'third-client-secret'].map((n) => request(`${url}/hold?n=${n}`))
  await waitFor(() => open.size === 3, 2000, 'three open replies')
  const shown = util.inspect(open.get('mine'), { depth: 5 })
  t.match(shown, 'mine', 'its own request is there')
  t.notMatch(shown, 'other-client-secret', 'not the reply that started before it')
  t.notMatch(shown, 'third-client-secret', 'nor the one after it')
  for (const reply of open.values()) reply.finish('ok')
  await Promise.all(answers)
})

t.test('stats() counts each reply once, by the first way it ended', async (t) => {
  const held: AsyncReply[] = []
  let leaving: AsyncReply | undefined
  const { url, app } = await startApp(t, { timeout: 10_000, closeGrace: 200 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/finish', handler (request, reply) { reply.finish('ok') } })
    asyncGet(app, '/fail', {
      handler (request, reply) {
        reply.fail(Object.assign(new Error('teapot'), { statusCode: 418 }))
        reply.finish('ignored')
      }
    })
    app.asyncRoute({ method: 'GET', url: '/throw', handler () { throw new Error('sync throw') } })
    app.asyncRoute({ method: 'GET', url: '/reject', async handler () { throw new Error('rejected') } })
    asyncGet(app, '/timeout', {
      timeout: 100,
      handler (request, reply) {
        // Finishing after the watchdog fired must not count a second time.
        setTimeout(() => reply.finish('too late'), 250)
      }
    })
    asyncGet(app, '/abort', {
      handler (request, reply) {
        leaving = reply
        reply.onClose(() => reply.finish('after the client left'))
      }
    })
    app.asyncRoute({ method: 'GET', url: '/held', handler (request, reply) { held.push(reply) } })
  })
  t.same(app.asyncRoute.stats(), { started: 0, finished: 0, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
  t.equal((await request(`${url}/finish`)).statusCode, 200)
  t.equal((await request(`${url}/fail`)).statusCode, 418)
  t.equal((await request(`${url}/throw`)).statusCode, 500)
  t.equal((await request(`${url}/reject`)).statusCode, 500)
  t.equal((await request(`${url}/timeout`)).statusCode, 504)
  const req = await sendOnly(`${url}/abort`)
  await waitFor(() => leaving !== undefined, 2000, 'the /abort handler')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')
  const heldResponse = request(`${url}/held`)
  await waitFor(() => held.length === 1, 2000, 'the /held handler')
  await sleep(300) // the late finish of /timeout has happened by now

  const before = app.asyncRoute.stats()
  t.same(before, { started: 7, finished: 1, timedOut: 1, aborted: 1, failed: 3, rejected: 0, pending: 1 })
  t.equal(before.started, before.finished + before.timedOut + before.aborted + before.failed + before.pending)

  await app.close()
  t.equal((await heldResponse).statusCode, 503, 'the held reply ended with the close grace')
  const after = app.asyncRoute.stats()
  t.same(after, { started: 7, finished: 1, timedOut: 1, aborted: 1, failed: 4, rejected: 0, pending: 0 }, 'the close grace counts as failed')
  t.equal(after.started, after.finished + after.timedOut + after.aborted + after.failed + after.pending)
})

t.test('diagnostics_channel publishes timeout, abort and finish with the request and a report', async (t) => {
  const seen: Record<string, Array<{ request: { id: string }, report: HangReport }>> = { timeout: [], abort: [], finish: [] }
  for (const name of Object.keys(seen)) {
    const listener = (message: unknown): void => {
      seen[name]?.push(message as { request: { id: string }, report: HangReport })
    }
    diagnostics.subscribe(`fastify-async-route:${name}`, listener)
    t.teardown(() => { diagnostics.unsubscribe(`fastify-async-route:${name}`, listener) })
  }
  const ids: Record<string, string> = {}
  let leaving = false
  const { url, app } = await startApp(t, { timeout: 150 }, (app) => {
    asyncGet(app, '/:kind', {
      handler (request, reply) {
        const kind = (request.params as { kind: string }).kind
        ids[kind] = request.id
        if (kind === 'finish') reply.finish('twelve bytes')
        if (kind === 'abort') {
          reply.setTimeout(0)
          leaving = true
        }
        if (kind === 'fail') reply.fail(new Error('not published'))
      }
    })
  })
  t.equal((await request(`${url}/finish?x=1`)).body, 'twelve bytes')
  t.equal((await request(`${url}/timeout`)).statusCode, 504)
  t.equal((await request(`${url}/fail`)).statusCode, 500)
  const req = await sendOnly(`${url}/abort`)
  await waitFor(() => leaving, 2000, 'the /abort handler')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the abort')

  t.equal(seen.finish?.length, 1, 'one finish message')
  t.equal(seen.timeout?.length, 1, 'one timeout message')
  t.match(seen.timeout?.[0], { code: 'FST_ASYNC_ROUTE_TIMEOUT' }, 'the watchdog fired (not idleTimeout)')
  t.equal(seen.abort?.length, 1, 'one abort message, and none for fail()')

  const finish = seen.finish?.[0]
  t.equal(finish?.request.id, ids.finish)
  t.match(finish?.report, { id: ids.finish, method: 'GET', url: '/finish?x=1', headersSent: true, bytesWritten: 12, inflight: [] })

  const timeout = seen.timeout?.[0]
  t.equal(timeout?.request.id, ids.timeout)
  t.match(timeout?.report, { id: ids.timeout, url: '/timeout', headersSent: false, bytesWritten: 0, handlerSettled: true, inflight: [] })
  t.ok((timeout?.report.elapsedMs ?? 0) >= 140)

  const abort = seen.abort?.[0]
  t.equal(abort?.request.id, ids.abort)
  t.match(abort?.report, { id: ids.abort, url: '/abort', headersSent: false, handlerSettled: true })
  for (const message of [finish, timeout, abort]) {
    t.same(Object.keys(message?.report ?? {}).sort(),
      ['bytesWritten', 'elapsedMs', 'handlerSettled', 'headersSent', 'id', 'inflight', 'method', 'url'])
  }
})

t.test('warnUnfinished logs one warning for a settled, idle, unfinished reply', async (t) => {
  const replies = new Map<string, AsyncReply>()
  const { url, logs } = await startApp(t, { warnUnfinished: 100, timeout: 5000 }, (app) => {
    asyncGet(app, '/idle', {
      handler (request, reply) { replies.set(request.id, reply) }
    })
  })
  const response = request(`${url}/idle?forgotten=yes`)
  await waitFor(() => replies.size === 1, 2000, 'the handler')
  await waitFor(() => logsAt(logs, LEVEL.warn, FORGOT).length > 0, 2000, 'the warning')
  // Stays idle four times as long: still a single warning.
  await sleep(400)
  const warnings = logsAt(logs, LEVEL.warn, FORGOT)
  t.equal(warnings.length, 1, 'exactly one warning')
  const [id, reply] = [...replies][0] as [string, AsyncReply]
  const line = warnings[0] as LogLine
  t.equal(line.reqId, id, 'through the request logger')
  t.match(line.report, { id, url: '/idle?forgotten=yes', handlerSettled: true, inflight: [] })
  t.same(logsAt(logs, LEVEL.warn).filter((l) => l !== line), [], 'no other warning (the watchdog has not fired)')
  reply.finish('finally')
  t.equal((await response).body, 'finally', 'the warning does not end the reply')
})

t.test('warnUnfinished stays quiet while an upstream request is in flight, a handler runs, or the reply writes', async (t) => {
  const upstream = await startUpstream(() => {})
  t.teardown(() => upstream.close())
  const held: AsyncReply[] = []
  const { url, logs } = await startApp(t, { warnUnfinished: 100, timeout: 5000 }, (app) => {
    asyncGet(app, '/stalled', {
      handler (request, reply) {
        held.push(reply)
        reply.fetch(upstream.url, () => {})
      }
    })
    asyncGet(app, '/running', {
      async handler (request, reply) {
        await sleep(450)
        reply.finish('ran long')
      }
    })
    asyncGet(app, '/writing', {
      handler (request, reply) {
        let n = 0
        const timer = setInterval(() => {
          reply.write(`${n++};`)
          if (n === 9) {
            clearInterval(timer)
            reply.finish()
          }
        }, 50)
      }
    })
    asyncGet(app, '/quick', {
      handler (request, reply) { setTimeout(() => reply.finish('in time'), 40) }
    })
  })
  const stalled = request(`${url}/stalled`)
  const [running, writing, quick] = await Promise.all([
    request(`${url}/running`),
    request(`${url}/writing`),
    request(`${url}/quick`)
  ])
  t.equal(running.body, 'ran long')
  t.equal(writing.body, '0;1;2;3;4;5;6;7;8;')
  t.equal(quick.body, 'in time')
  await waitFor(() => upstream.requests.length === 1, 2000, 'the upstream request')
  t.equal(held.length, 1)
  t.same(logsAt(logs, LEVEL.warn, FORGOT), [], 'no warning for any of them')
  held[0]?.finish('done')
  t.equal((await stalled).body, 'done')
})

t.test('warnUnfinished is off by default', async (t) => {
  let theReply: AsyncReply | undefined
  const { url, logs } = await startRoute(t, { timeout: 5000 }, (request, reply) => { theReply = reply })
  const response = request(`${url}/`)
  await waitFor(() => theReply !== undefined, 2000, 'the handler')
  await sleep(400)
  t.same(logsAt(logs, LEVEL.warn), [], 'no warning')
  theReply?.finish('ok')
  t.equal((await response).body, 'ok')
})

t.test('replies on one keep-alive connection each count as finished, never as aborted', async (t) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const { url, app } = await startRoute(t, { timeout: 5000 }, (request, reply) => { setTimeout(() => reply.finish('ok'), 20) })
  for (let i = 0; i < 3; i++) {
    const res = await request(`${url}/`, { agent })
    t.equal(res.body, 'ok')
  }
  t.same(app.asyncRoute.stats(), { started: 3, finished: 3, timedOut: 0, aborted: 0, failed: 0, rejected: 0, pending: 0 })
  t.same(app.asyncRoute.pending(), [])
})
