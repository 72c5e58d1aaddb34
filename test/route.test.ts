// app.asyncRoute(): an ordinary Fastify route whose reply stays open until finish(); the
// handler's throws and rejections, the basic watchdog, and the checks made at declaration.
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncReply, type AsyncRoutePluginOptions } from '../plugin/index.js'
import { LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { request, sleep, waitFor, type ClientResponse } from './helpers/client.js'

const OPTIONS: AsyncRoutePluginOptions = { timeout: 0, closeGrace: 100 }

/** Settles with 'answered' if the response arrives within `ms`, else 'waiting'. */
function answeredWithin (pending: Promise<ClientResponse>, ms: number): Promise<'answered' | 'waiting'> {
  return Promise.race([
    pending.then(() => 'answered' as const, () => 'answered' as const),
    sleep(ms).then(() => 'waiting' as const)
  ])
}

function json (res: ClientResponse): Record<string, unknown> {
  return JSON.parse(res.body) as Record<string, unknown>
}

t.test('asyncRoute() registers an ordinary route that printRoutes() lists', async (t) => {
  const { app, url } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/async/listed', handler (request, reply) { reply.finish('listed') } })
    app.asyncRoute({ method: ['POST', 'PUT'], url: '/async/:id', handler (request, reply) { reply.finish(request.params as Record<string, string>) } })
  })
  const routes = app.printRoutes({ commonPrefix: false })
  t.match(routes, /\/async\/listed \(GET, HEAD\)/)
  t.match(routes, /\/async\/:id \(POST, PUT\)/)
  t.ok(app.hasRoute({ method: 'GET', url: '/async/listed' }))
  const res = await request(`${url}/async/listed`)
  t.equal(res.body, 'listed')
  const put = await request(`${url}/async/42`, { method: 'PUT' })
  t.strictSame(json(put), { id: '42' }, 'path parameters are parsed as for any route')
  const get = await request(`${url}/async/42`)
  t.equal(get.statusCode, 404, 'only the declared methods are routed')
})

t.test('asyncRoute() returns the Fastify instance, so declarations chain', async (t) => {
  let returned: unknown
  const { app, url } = await startApp(t, OPTIONS, (app) => {
    returned = app
      .asyncRoute({ method: 'GET', url: '/one', handler (request, reply) { reply.finish('one') } })
      .asyncRoute({ method: 'GET', url: '/two', handler (request, reply) { reply.finish('two') } })
  })
  t.equal(returned, app)
  t.equal((await request(`${url}/one`)).body, 'one')
  t.equal((await request(`${url}/two`)).body, 'two')
})

t.test('hooks run before the handler, and a hook that answers keeps the handler from running', async (t) => {
  const order: string[] = []
  let handlerRuns = 0
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.addHook('onRequest', async () => { order.push('app onRequest') })
    app.asyncRoute({
      method: 'POST',
      url: '/',
      onRequest (request, reply, done) {
        order.push('route onRequest')
        done()
      },
      preValidation: async () => { order.push('preValidation') },
      async preHandler (request, reply) {
        order.push('preHandler')
        if (request.headers.authorization !== 'yes') await reply.code(401).send({ denied: true })
      },
      handler (request, reply) {
        handlerRuns++
        order.push('handler')
        setTimeout(() => reply.finish({ order, body: request.body }), 10)
      }
    })
  })
  const res = await request(url, { method: 'POST', headers: { authorization: 'yes', 'content-type': 'application/json' }, body: '{"a":1}' })
  t.equal(res.statusCode, 200)
  t.strictSame(json(res), {
    order: ['app onRequest', 'route onRequest', 'preValidation', 'preHandler', 'handler'],
    body: { a: 1 }
  })
  const denied = await request(url, { method: 'POST' })
  t.equal(denied.statusCode, 401)
  t.strictSame(json(denied), { denied: true })
  t.equal(handlerRuns, 1, 'the handler did not run for the denied request')
})

t.test('a schema validation failure is Fastify\'s own 400 and the handler never runs', async (t) => {
  let handlerRuns = 0
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute<{ Querystring: { q: string } }>({
      method: 'GET',
      url: '/search',
      schema: {
        querystring: { type: 'object', required: ['q'], properties: { q: { type: 'string', minLength: 2 } } }
      },
      handler (request, reply) {
        handlerRuns++
        reply.finish({ q: request.query.q })
      }
    })
  })
  const missing = await request(`${url}/search`)
  t.equal(missing.statusCode, 400)
  t.strictSame(json(missing), {
    statusCode: 400,
    code: 'FST_ERR_VALIDATION',
    error: 'Bad Request',
    message: 'querystring must have required property \'q\''
  })
  const short = await request(`${url}/search?q=a`)
  t.equal(short.statusCode, 400)
  t.equal(handlerRuns, 0)
  const ok = await request(`${url}/search?q=fastify`)
  t.equal(ok.statusCode, 200)
  t.strictSame(json(ok), { q: 'fastify' })
  t.equal(handlerRuns, 1)
})

t.test('the route config is reachable from the handler', async (t) => {
  const { url } = await startRoute(t, OPTIONS, {
    config: { flavour: 'vanilla' },
    handler (request, reply) {
      reply.finish({ flavour: (request.routeOptions.config as { flavour?: string }).flavour })
    }
  })
  t.strictSame(json(await request(url)), { flavour: 'vanilla' })
})

t.test('the handler\'s return does not finish the reply: the answer comes with finish()', async (t) => {
  const held: AsyncReply[] = []
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/timer',
      // @ts-expect-error a handler is typed to return nothing or the reply: a value is not sent
      async handler (request, reply) {
        setTimeout(() => reply.finish('from the timer'), 100)
        return 'returned value'
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/held',
      // @ts-expect-error a handler is typed to return nothing or the reply: a value is not sent
      handler (request, reply) {
        held.push(reply)
        return { returned: true }
      }
    })
  })
  const started = Date.now()
  const timer = await request(`${url}/timer`)
  t.equal(timer.body, 'from the timer', 'the returned value is not the answer')
  t.ok(Date.now() - started >= 90, 'the answer waited for the timer')

  const pending = request(`${url}/held`)
  await waitFor(() => held.length === 1, 3000, 'the handler to run')
  t.equal(await answeredWithin(pending, 250), 'waiting', 'no answer after the handler returned')
  t.equal(held[0]?.finished, false)
  held[0]?.finish('finished later')
  const res = await pending
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'finished later')
  t.ok(res.complete)

  // One warning per route, naming it, the first time only.
  t.equal((await request(`${url}/timer`)).body, 'from the timer')
  const warned = logsAt(logs, LEVEL.warn, 'the handler returned a value while its reply was open')
  t.strictSame(warned.map((line) => [line.method, line.url]), [['GET', '/timer'], ['GET', '/held']])
  t.match(warned[0]?.msg, /^async route GET \/timer: .*call reply\.finish\(value\) to send it/)
})

t.test('returning undefined, the reply, or a value after finish() logs no warning', async (t) => {
  const { url, logs } = await startApp(t, { timeout: 1000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/reply', handler (request, reply) { return reply.status(201).header('x-a', '1') } })
    app.asyncRoute({ method: 'GET', url: '/async-reply', async handler (request, reply) { setTimeout(() => reply.finish('later'), 20); return reply } })
    app.asyncRoute({ method: 'GET', url: '/redirect', async handler (request, reply) { return reply.redirect('/x') } })
    app.asyncRoute({ method: 'GET', url: '/finished', async handler (request, reply) { reply.finish('done') } })
    // @ts-expect-error a value returned after finish() is not sent either, but nothing is open
    app.asyncRoute({ method: 'GET', url: '/after', async handler (request, reply) { reply.finish('done'); return 'ignored' } })
    app.asyncRoute({
      method: 'GET',
      url: '/upstream-error',
      upstream: 'http://127.0.0.1:1/',
      handler (request, reply) { reply.finish('unreached') },
      onUpstreamError (_error, request, reply) {
        setTimeout(() => reply.finish('handled'), 20)
        return 'not the handler'
      }
    })
  })
  const reply = request(`${url}/reply`, { timeout: 3000 })
  for (const path of ['/async-reply', '/redirect', '/finished', '/after', '/upstream-error']) {
    t.not((await request(`${url}${path}`)).statusCode, 500, path)
  }
  t.equal((await reply).statusCode, 504, 'a reply returned and never finished: the watchdog')
  t.equal(logsAt(logs, LEVEL.warn, 'the handler returned a value').length, 0)
})

t.test('with timeout 0 and no finish() the client keeps waiting until the app closes', async (t) => {
  let handlerRuns = 0
  const { app, url } = await startRoute(t, { timeout: 100, closeGrace: 50 }, { timeout: 0, handler () { handlerRuns++ } })
  const pending = request(url, { timeout: 5000 })
  await waitFor(() => handlerRuns === 1, 3000, 'the handler to run')
  t.equal(await answeredWithin(pending, 300), 'waiting', 'no answer, though the plugin timeout (100 ms) passed')
  await app.close()
  const res = await pending
  t.equal(res.statusCode, 503, 'closing the app ended the reply')
  t.equal(json(res).code, 'FST_ASYNC_ROUTE_CLOSING')
})

t.test('a throw or rejection before finish() becomes Fastify\'s JSON error answer', async (t) => {
  const teapot = (): Error => Object.assign(new Error('short and stout'), { statusCode: 418, code: 'E_TEAPOT' })
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/sync-418', handler () { throw teapot() } })
    app.asyncRoute({
      method: 'GET',
      url: '/async-503',
      async handler () {
        await sleep(10)
        throw Object.assign(new Error('down for maintenance'), { statusCode: 503 })
      }
    })
    app.asyncRoute({ method: 'GET', url: '/rejected', handler () { return Promise.reject(new Error('rejected promise')) } })
    app.asyncRoute({
      method: 'GET',
      url: '/status-302',
      handler () { throw Object.assign(new Error('not an error status'), { statusCode: 302 }) }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/status-600',
      handler () { throw Object.assign(new Error('out of range'), { statusCode: 600 }) }
    })
    app.asyncRoute({ method: 'GET', url: '/status-prop', handler () { throw Object.assign(new Error('gone'), { status: 410 }) } })
    app.asyncRoute({
      method: 'GET',
      url: '/numeric-code',
      handler () { throw Object.assign(new Error('numeric code'), { code: 42 }) }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/after-write',
      handler (request, reply) {
        reply.header('x-from-handler', 'yes')
        throw new Error('before any body')
      }
    })
  })
  const cases: Array<[string, number, Record<string, unknown>]> = [
    ['/sync-418', 418, { statusCode: 418, code: 'E_TEAPOT', error: 'I\'m a Teapot', message: 'short and stout' }],
    ['/async-503', 503, { statusCode: 503, error: 'Service Unavailable', message: 'down for maintenance' }],
    ['/rejected', 500, { statusCode: 500, error: 'Internal Server Error', message: 'rejected promise' }],
    ['/status-302', 500, { statusCode: 500, error: 'Internal Server Error', message: 'not an error status' }],
    ['/status-600', 500, { statusCode: 500, error: 'Internal Server Error', message: 'out of range' }],
    ['/status-prop', 410, { statusCode: 410, error: 'Gone', message: 'gone' }],
    ['/numeric-code', 500, { statusCode: 500, error: 'Internal Server Error', message: 'numeric code' }]
  ]
  for (const [path, status, body] of cases) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, status, `${path} status`)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8', `${path} content type`)
    t.equal(res.headers['content-length'], String(Buffer.byteLength(res.body)), `${path} content length`)
    t.strictSame(json(res), body, `${path} body: Fastify's shape, no stack`)
    t.ok(res.complete, `${path} complete`)
  }
  const errors = logsAt(logs, LEVEL.error)
  t.strictSame(errors.map((line) => line.msg).sort(),
    ['down for maintenance', 'not an error status', 'numeric code', 'out of range', 'rejected promise'],
    'every 5xx is logged at error level, and no 4xx')
  t.ok(errors.every((line) => typeof line.reqId === 'string' && line.err !== undefined), 'through the request logger, with the error')
  t.equal(logsAt(logs, LEVEL.error, 'short and stout').length, 0)
  t.equal(logsAt(logs, LEVEL.error, 'gone').length, 0)

  const withHeader = await request(`${url}/after-write`)
  t.equal(withHeader.statusCode, 500)
  t.equal(json(withHeader).message, 'before any body')
})

t.test('a thrown or rejected non-Error value becomes a 500', async (t) => {
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/string',
      handler () {
        // eslint-disable-next-line no-throw-literal
        throw 'a plain string'
      }
    })
    app.asyncRoute({ method: 'GET', url: '/undefined', handler () { return Promise.reject(undefined) } }) // eslint-disable-line prefer-promise-reject-errors
    app.asyncRoute({ method: 'GET', url: '/object', async handler () { throw { statusCode: 404 } } }) // eslint-disable-line no-throw-literal
  })
  for (const path of ['/string', '/undefined', '/object']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 500, path)
    t.match(json(res), { statusCode: 500, error: 'Internal Server Error', message: String }, path)
    t.equal(json(res).stack, undefined, path)
    t.ok(res.complete, path)
  }
  t.equal(json(await request(`${url}/string`)).message, 'a plain string')
  t.equal(logsAt(logs, LEVEL.error).length, 4)
})

t.test('a throw or rejection after finish() leaves the response intact', async (t) => {
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/sync',
      handler (request, reply) {
        reply.finish('intact')
        throw new Error('thrown after finish')
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/async',
      async handler (request, reply) {
        reply.finish({ intact: true })
        await sleep(10)
        throw new Error('rejected after finish')
      }
    })
  })
  const sync = await request(`${url}/sync`)
  t.equal(sync.statusCode, 200)
  t.equal(sync.body, 'intact')
  t.ok(sync.complete)
  const async = await request(`${url}/async`)
  t.equal(async.statusCode, 200)
  t.strictSame(json(async), { intact: true })
  t.ok(async.complete)
  await waitFor(() => logsAt(logs, LEVEL.debug, 'threw after its reply ended').length === 2, 2000, 'the debug logs')
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'nothing logged as an error')
  t.equal(logsAt(logs, LEVEL.warn).length, 0)
})

t.test('the plugin timeout ends an unfinished reply with 504 FST_ASYNC_ROUTE_TIMEOUT', async (t) => {
  const { url, logs } = await startRoute(t, { timeout: 80, closeGrace: 100 }, () => {})
  const started = Date.now()
  const res = await request(url, { timeout: 3000 })
  t.ok(Date.now() - started >= 70, 'not before the timeout')
  t.equal(res.statusCode, 504)
  t.match(json(res), { statusCode: 504, code: 'FST_ASYNC_ROUTE_TIMEOUT', error: 'Gateway Timeout', message: /not finished within \d+ ms/ })
  t.strictSame(Object.keys(json(res)).sort(), ['code', 'error', 'message', 'statusCode'])
  t.ok(res.complete)
  t.equal(logsAt(logs, LEVEL.warn).length, 1, 'one warning, the hang report')
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'not logged again at error level')
})

t.test('invalid route options throw at asyncRoute() with a message naming the option', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute)
  const handler = (): void => {}
  const base = { method: 'GET' as const, handler }
  for (const timeout of [-1, 1.5, 2_147_483_648, '100', Number.NaN, Infinity, null]) {
    t.throws(() => app.asyncRoute({ ...base, url: `/t${String(timeout)}`, timeout: timeout as number }),
      { name: 'TypeError', message: /"timeout" must be an integer from 0 to 2147483647/ }, `timeout ${String(timeout)}`)
  }
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/no-handler' } as unknown as Parameters<typeof app.asyncRoute>[0]),
    { name: 'TypeError', code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /"handler" must be a function/ })
  t.throws(() => app.asyncRoute({ ...base, url: '/bad-handler', handler: 'nope' as unknown as typeof handler }),
    { message: /"handler"/ })
  for (const upstream of [42, null, {}, true]) {
    t.throws(() => app.asyncRoute({ ...base, url: '/up', upstream: upstream as unknown as string }),
      { name: 'TypeError', message: /"upstream"/ }, `upstream ${JSON.stringify(upstream)}`)
  }
  t.throws(() => app.asyncRoute({ ...base, url: '/on-err', onUpstreamError: 'x' as unknown as () => void }),
    { name: 'TypeError', message: /"onUpstreamError"/ })
  t.throws(() => app.asyncRoute(null as unknown as Parameters<typeof app.asyncRoute>[0]), { name: 'TypeError', message: /route options/ })
  // The valid edges are accepted.
  app.asyncRoute({ ...base, url: '/zero', timeout: 0 })
  app.asyncRoute({ ...base, url: '/max', timeout: 2_147_483_647 })
  app.asyncRoute({ ...base, url: '/url-upstream', upstream: new URL('http://127.0.0.1:1/'), onUpstreamError () {} })
  await app.ready()
  t.notOk(app.hasRoute({ method: 'GET', url: '/t-1' }), 'a rejected declaration registered nothing')
  t.notOk(app.hasRoute({ method: 'GET', url: '/no-handler' }))
  t.ok(app.hasRoute({ method: 'GET', url: '/zero' }))
  t.ok(app.hasRoute({ method: 'GET', url: '/max' }))
  t.ok(app.hasRoute({ method: 'GET', url: '/url-upstream' }))
})

t.test('this inside the handler is the Fastify instance', async (t) => {
  let appRef: FastifyInstance | undefined
  const { url } = await startApp(t, OPTIONS, (app) => {
    appRef = app
    app.asyncRoute({
      method: 'GET',
      url: '/',
      handler (request, reply) { reply.finish({ isApp: this === appRef, isServer: this === request.server }) }
    })
  })
  t.strictSame(json(await request(url)), { isApp: true, isServer: true })
})

t.test('asyncRoute() in a child plugin scope gets that scope\'s hooks, prefix and instance', async (t) => {
  let childRef: FastifyInstance | undefined
  const { url } = await startApp(t, OPTIONS, async (app) => {
    await app.register(async (child) => {
      childRef = child
      child.addHook('onRequest', (request, reply, done) => {
        reply.header('x-scope', 'child')
        done()
      })
      child.decorateRequest('scopeName', 'child scope')
      child.asyncRoute({
        method: 'GET',
        url: '/inside',
        handler (request, reply) {
          reply.finish({
            scope: (request as unknown as { scopeName?: string }).scopeName,
            thisIsChild: this === childRef
          })
        }
      })
    }, { prefix: '/scoped' })
    app.asyncRoute({ method: 'GET', url: '/outside', handler (request, reply) { reply.finish({ scope: (request as unknown as { scopeName?: string }).scopeName ?? null }) } })
  })
  const inside = await request(`${url}/scoped/inside`)
  t.equal(inside.statusCode, 200)
  t.equal(inside.headers['x-scope'], 'child', 'the child scope\'s onRequest hook ran')
  t.strictSame(json(inside), { scope: 'child scope', thisIsChild: true })
  const outside = await request(`${url}/outside`)
  t.equal(outside.headers['x-scope'], undefined, 'the child hook does not leak to the parent')
  t.strictSame(json(outside), { scope: null })
})

t.test('asyncRoute() called without its instance registers on the instance that registered the plugin', async (t) => {
  let thisInHandler: unknown
  let owner: FastifyInstance | undefined
  const { url } = await startApp(t, OPTIONS, (app) => {
    owner = app
    const { asyncRoute: declare } = app
    declare({ method: 'GET', url: '/detached', handler (request, reply) { thisInHandler = this; reply.finish('detached') } })
  })
  const res = await request(`${url}/detached`)
  t.equal(res.body, 'detached')
  t.equal(thisInHandler, owner)
})
