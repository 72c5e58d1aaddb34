// Cleanup and per-route hooks: reply.onEnd (however a reply ends), a route's onWatchdog and
// warnUnfinished, and saying goodbye on shutdown from a preClose hook.
import Fastify from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncReply, type ReplyOutcome } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'

t.test('onEnd runs once with the outcome, however the reply ends', async (t) => {
  const outcomes: Record<string, ReplyOutcome[]> = {}
  const track = (name: string, reply: AsyncReply): void => {
    outcomes[name] = []
    reply.onEnd((outcome) => { outcomes[name]?.push(outcome) })
  }
  const { url, app } = await startApp(t, { timeout: 100 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/finished', handler (_request, reply) { track('finished', reply); reply.finish('ok') } })
    app.asyncRoute({ method: 'GET', url: '/timedOut', handler (_request, reply) { track('timedOut', reply) } })
    app.asyncRoute({ method: 'GET', url: '/failed', handler (_request, reply) { track('failed', reply); reply.fail(new Error('no')) } })
    app.asyncRoute({ method: 'GET', url: '/aborted', timeout: 0, handler (_request, reply) { track('aborted', reply) } })
  })
  t.equal((await request(`${url}/finished`)).body, 'ok')
  t.equal((await request(`${url}/timedOut`)).statusCode, 504)
  t.equal((await request(`${url}/failed`)).statusCode, 500)
  const req = await sendOnly(`${url}/aborted`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  req.destroy()
  await waitFor(() => outcomes.aborted?.length === 1, 2000, 'the abort')
  t.same(outcomes, { finished: ['finished'], timedOut: ['timedOut'], failed: ['failed'], aborted: ['aborted'] })
})

t.test('onEnd on an ended reply runs at once; every callback runs even if one throws, the throw is logged', async (t) => {
  const calls: string[] = []
  const { url, logs } = await startRoute(t, {}, (_request, reply) => {
    reply.onEnd(() => { calls.push('first'); throw new Error('cleanup broke') })
    reply.onEnd((outcome) => { calls.push(`second ${outcome}`) })
    reply.finish('ok')
    reply.onEnd((outcome) => { calls.push(`late ${outcome}`) })
    calls.push('after finish')
  })
  t.equal((await request(`${url}/`)).body, 'ok')
  t.same(calls, ['first', 'second finished', 'late finished', 'after finish'])
  t.equal(logsAt(logs, LEVEL.error, 'reply.onEnd() callback threw').length, 1)
})

t.test('onEnd rejects a non-function', async (t) => {
  let thrown: unknown
  const { url } = await startRoute(t, {}, (_request, reply) => {
    try {
      reply.onEnd('cleanup' as unknown as () => void)
    } catch (error) {
      thrown = error
    }
    reply.finish('ok')
  })
  await request(`${url}/`)
  t.type(thrown, TypeError)
})

t.test("a route's onWatchdog replaces the plugin's onTimeout for that route only", async (t) => {
  const plugin: string[] = []
  const { url } = await startApp(t, { timeout: 80, onTimeout: (request) => { plugin.push(request.url) } }, (app) => {
    asyncGet(app, '/poll', {
      onWatchdog (_request, reply, report) {
        // Slack: a timer may fire a millisecond early by Date.now(), which the report uses.
        reply.finish({ messages: [], waitedMs: report.elapsedMs >= 70 })
      },
      handler () {}
    })
    app.asyncRoute({ method: 'GET', url: '/other', handler () {} })
  })
  const poll = await request(`${url}/poll`)
  t.equal(poll.statusCode, 200)
  t.same(JSON.parse(poll.body), { messages: [], waitedMs: true })
  t.equal((await request(`${url}/other`)).statusCode, 504)
  t.same(plugin, ['/other'], "the plugin's onTimeout ran for the other route only")
})

t.test("a route's warnUnfinished overrides the plugin's, false turns it off", async (t) => {
  const { url, app, logs } = await startApp(t, { warnUnfinished: 60, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/poll', warnUnfinished: false, handler (_request, reply) { setTimeout(() => reply.finish('x'), 300) } })
    app.asyncRoute({ method: 'GET', url: '/plugin', handler (_request, reply) { setTimeout(() => reply.finish('x'), 300) } })
  })
  await Promise.all([request(`${url}/poll`), request(`${url}/plugin`)])
  const warnings = logsAt(logs, LEVEL.warn, 'did you forget reply.finish()')
  t.equal(warnings.length, 1)
  t.match(warnings[0], { report: { url: '/plugin' } })
  await app.close()

  const only = await startRoute(t, { timeout: 0 }, { warnUnfinished: 60, handler (_request, reply) { setTimeout(() => reply.finish('x'), 300) } })
  await request(`${only.url}/`)
  t.equal(logsAt(only.logs, LEVEL.warn, 'did you forget reply.finish()').length, 1, 'a route may turn it on alone')
})

t.test('route options onWatchdog and warnUnfinished are checked when asyncRoute() is called', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute)
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/a', onWatchdog: 'x' as never, handler () {} }), /"onWatchdog" must be a function/)
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/b', warnUnfinished: -1, handler () {} }), /"warnUnfinished" must be an integer/)
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/c', warnUnfinished: true as never, handler () {} }), /"warnUnfinished"/)
})

t.test('a preClose hook registered before the plugin says goodbye before the grace; one registered after runs once the grace is over', async (t) => {
  const order: string[] = []
  const app = Fastify()
  const waiting = new Set<AsyncReply>()
  app.addHook('preClose', (done) => {
    order.push(`goodbye to ${waiting.size}`)
    for (const reply of waiting) reply.finish({ messages: [] })
    done()
  })
  await app.register(asyncRoute, { closeGrace: 300, timeout: 0 })
  app.addHook('preClose', (done) => {
    order.push(`after, ${app.asyncRoute.stats().pending} pending`)
    done()
  })
  asyncGet(app, '/poll', {
    handler (_request, reply) {
      waiting.add(reply)
      reply.onEnd(() => waiting.delete(reply))
    }
  })
  app.asyncRoute({ method: 'GET', url: '/stuck', handler () {} })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const poll = request(`${url}/poll`)
  const stuck = request(`${url}/stuck`)
  await waitFor(() => app.asyncRoute.stats().pending === 2, 2000, 'both pending')
  const started = Date.now()
  await app.close()
  const polled = await poll
  t.equal(polled.statusCode, 200)
  t.same(JSON.parse(polled.body), { messages: [] }, 'the long poll got its goodbye answer')
  t.equal((await stuck).statusCode, 503, 'the stuck one was ended by the grace')
  t.same(order, ['goodbye to 1', 'after, 0 pending'])
  t.ok(Date.now() - started >= 250, 'the hook after the plugin ran once the grace was over')
  await sleep(10)
})
