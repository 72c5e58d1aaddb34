// The `allowedOrigins` plugin option at work: fetch, pipe(url) and the upstream option reach
// only the origins listed (its validation is in options.test.ts).
import t from 'tap'
import { ORIGIN_DENIED } from './helpers/answers.js'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { fetchText, pipeTo } from './helpers/routes.js'
import { request } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

t.test('allowedOrigins: fetch, pipe(url) and upstream to a denied origin give 500 FST_ASYNC_ROUTE_ORIGIN_DENIED without connecting', async (t) => {
  const allowed = await upstreamFor(t)
  const denied = await upstreamFor(t)
  let called = 0
  const { url, logs } = await startApp(t, { allowedOrigins: [allowed.origin] }, (app) => {
    asyncGet(app, '/fetch', fetchText(`${denied.origin}/x`))
    asyncGet(app, '/pipe', pipeTo(`${denied.origin}/x`))
    asyncGet(app, '/upstream', {
      upstream: `${denied.origin}/x`,
      handler (_request, reply) {
        called++
        reply.finish('handler')
      }
    })
    asyncGet(app, '/invalid', {
      async handler (_request, reply) {
        await reply.fetch('not a url at all')
        reply.finish('unexpected')
      }
    })
  })
  for (const path of ['/fetch', '/pipe', '/upstream']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 500, `${path}: 500`)
    t.same(JSON.parse(res.body), ORIGIN_DENIED, `${path}: origin denied`)
    t.notOk(res.body.includes(new URL(denied.origin).port), `${path}: the answer does not name the denied origin`)
  }
  // A URL that does not parse is refused as such, before the origin check.
  const invalid = await request(`${url}/invalid`)
  t.equal(invalid.statusCode, 500)
  t.equal(JSON.parse(invalid.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  t.equal(called, 0, 'the handler was not called')
  t.equal(denied.connections(), 0, 'the denied upstream saw no connection')
  t.equal(allowed.connections(), 0)
  const warnings = logsAt(logs, LEVEL.warn, 'allowedOrigins')
  t.equal(warnings.length, 3, 'each denial is logged as a warning')
  t.match(warnings[0], { upstream: `${denied.origin}/x` }, 'the warning names the denied upstream')
})

t.test('allowedOrigins: an allowed origin (given with a trailing slash) works for fetch, pipe and upstream', async (t) => {
  const up = await upstreamFor(t, (req, res) => res.end(`allowed ${req.url}`))
  const { url } = await startApp(t, { allowedOrigins: ['http://192.0.2.1:1', `${up.origin}/`] }, (app) => {
    asyncGet(app, '/fetch', fetchText(`${up.origin}/f`))
    asyncGet(app, '/pipe', pipeTo(new URL('/p', up.origin)))
    asyncGet(app, '/upstream', {
      upstream: () => ({ url: `${up.origin}/u` }),
      handler (_request, reply, res) {
        return reply.pipe(res!)
      }
    })
  })
  t.equal((await request(`${url}/fetch`)).body, 'allowed /f')
  t.equal((await request(`${url}/pipe`)).body, 'allowed /p')
  t.equal((await request(`${url}/upstream`)).body, 'allowed /u')
  t.equal(up.requests.length, 3, 'each reached the upstream')
})

t.test('allowedOrigins compares origins, not prefixes: another port or userinfo trick is denied', async (t) => {
  const allowed = await upstreamFor(t)
  const other = await upstreamFor(t)
  const { url } = await startApp(t, { allowedOrigins: [allowed.origin] }, (app) => {
    app.asyncRoute<{ Querystring: { to: string } }>({
      method: 'GET',
      url: '/',
      async handler (request, reply) {
        const res = await reply.fetch(request.query.to)
        reply.finish(await res.body.text())
      }
    })
  })
  const tricks = [
    `${other.origin}/`,
    `http://127.0.0.1:${new URL(allowed.origin).port}@127.0.0.1:${new URL(other.origin).port}/`,
    `${allowed.origin.replace('127.0.0.1', 'localhost')}/`
  ]
  for (const to of tricks) {
    const res = await request(`${url}/?to=${encodeURIComponent(to)}`)
    t.equal(res.statusCode, 500, to)
    t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_ORIGIN_DENIED', to)
  }
  t.equal(other.connections(), 0)
  t.equal(allowed.connections(), 0)
})
