// Fastify serialises with `schema.response` only in reply.send(), which a hijacked reply never
// reaches. An async route that declares one gets a warning when it is declared, once.
import t from 'tap'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { request } from './helpers/client.js'

const WARNING = 'schema.response is not used by async routes'
const RESPONSE_SCHEMA = {
  200: { type: 'object', properties: { id: { type: 'string' } }, additionalProperties: false }
}

t.test('a route with a response schema gets one warning when declared, none per request', async (t) => {
  const { logs, url } = await startApp(t, { timeout: 0 }, (app) => {
    asyncGet(app, '/with-schema', {
      schema: { response: RESPONSE_SCHEMA },
      handler (_request, reply) {
        reply.finish({ id: 'a', secret: 'not filtered' })
      }
    })
  })
  const declared = logsAt(logs, LEVEL.warn, WARNING)
  t.equal(declared.length, 1, 'one warning at declaration')
  t.match(declared[0], { method: 'GET', url: '/with-schema' }, 'naming the route')
  t.match(declared[0]!.msg, /hijacked/, 'and why')

  for (let i = 0; i < 3; i++) {
    const res = await request(`${url}/with-schema`)
    t.equal(res.statusCode, 200)
    // What the warning is about: the schema would have dropped `secret`.
    t.strictSame(JSON.parse(res.body), { id: 'a', secret: 'not filtered' }, 'the response schema did not filter the body')
  }
  t.equal(logsAt(logs, LEVEL.warn, WARNING).length, 1, 'still one warning after three requests')
})

t.test('each route with a response schema is named in its own warning', async (t) => {
  const { logs } = await startApp(t, { timeout: 0 }, async (app) => {
    app.asyncRoute({ method: 'GET', url: '/one', schema: { response: RESPONSE_SCHEMA }, handler (_request, reply) { reply.finish() } })
    await app.register(async (child) => {
      child.asyncRoute({ method: ['POST', 'PUT'], url: '/two', schema: { response: { '2xx': {} } }, handler (_request, reply) { reply.finish() } })
    }, { prefix: '/child' })
  })
  const warnings = logsAt(logs, LEVEL.warn, WARNING)
  t.equal(warnings.length, 2)
  t.match(warnings, [{ method: 'GET', url: '/one' }, { method: ['POST', 'PUT'], url: '/two' }])
})

t.test('routes without a response schema declare silently', async (t) => {
  const { logs, url } = await startApp(t, { timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/no-schema', handler (_request, reply) { reply.finish('plain') } })
    asyncGet(app, '/query-schema', {
      schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } } } },
      handler (request, reply) { reply.finish(request.query as Record<string, unknown>) }
    })
    // An ordinary route's response schema is Fastify's business, not the plugin's.
    app.get('/ordinary', { schema: { response: RESPONSE_SCHEMA } }, async () => ({ id: 'b', secret: 'filtered' }))
  })
  t.equal((await request(`${url}/no-schema`)).body, 'plain')
  t.strictSame(JSON.parse((await request(`${url}/query-schema?n=3`)).body), { n: 3 })
  t.strictSame(JSON.parse((await request(`${url}/ordinary`)).body), { id: 'b' })
  t.strictSame(logsAt(logs, LEVEL.warn), [], 'no warning at all')
})
