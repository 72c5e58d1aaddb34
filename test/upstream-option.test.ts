// The `upstream` route option: its forms, its failures (with and without `onUpstreamError`),
// the watchdog over it, and its response released when the handler does not read it.
import t from 'tap'
import { Agent } from 'undici'
import { UPSTREAM_ERROR } from './helpers/answers.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { echo, refusedOrigin, upstreamFor } from './helpers/upstream.js'

t.test('upstream as a string: a plain GET whose response is the handler\'s third argument', async (t) => {
  const up = await upstreamFor(t, echo())
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'POST',
      url: '/',
      upstream: `${up.origin}/fixed?a=1`,
      async handler (_request, reply, res) {
        if (res === undefined) return reply.fail(new Error('no upstream response'))
        reply.status(res.statusCode).header('x-upstream', String(res.headers['x-upstream'])).finish(await res.body.text())
      }
    })
  })
  const res = await request(`${url}/?incoming=1`, {
    method: 'POST',
    headers: { authorization: 'Bearer incoming-secret', cookie: 'session=1', 'content-type': 'text/plain', 'x-incoming': 'yes' },
    body: 'incoming body'
  })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-upstream'], 'echo')
  const seen = JSON.parse(res.body)
  t.equal(seen.method, 'GET', 'a plain GET')
  t.equal(seen.url, '/fixed?a=1', 'the configured path, not the incoming one')
  t.equal(seen.body, '', 'no body forwarded')
  t.equal(seen.headers.authorization, undefined, 'the incoming authorization header is not forwarded')
  t.equal(seen.headers.cookie, undefined, 'no cookie forwarded')
  t.equal(seen.headers['x-incoming'], undefined, 'no incoming header forwarded')
})

t.test('upstream as a URL object', async (t) => {
  const up = await upstreamFor(t, echo())
  const { url } = await startRoute(t, {}, {
    upstream: new URL('/from-url', up.origin),
    async handler (_request, reply, res) {
      reply.finish(await res!.body.json() as Record<string, unknown>)
    }
  })
  const res = await request(`${url}/`, { headers: { authorization: 'Basic c2VjcmV0' } })
  const seen = JSON.parse(res.body)
  t.equal(seen.url, '/from-url')
  t.equal(seen.method, 'GET')
  t.equal(seen.headers.authorization, undefined)
})

t.test('upstream as a sync function of the request returning a URL string', async (t) => {
  const up = await upstreamFor(t, echo())
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute<{ Params: { id: string } }>({
      method: 'GET',
      url: '/item/:id',
      upstream: (request) => `${up.origin}/items/${request.params.id}`,
      async handler (_request, reply, res) {
        reply.finish(await res!.body.json() as Record<string, unknown>)
      }
    })
  })
  const res = await request(`${url}/item/42`)
  t.equal(JSON.parse(res.body).url, '/items/42')
})

t.test('upstream as an async function returning { url, method, headers, body }: the upstream sees them', async (t) => {
  const up = await upstreamFor(t, echo())
  const { url } = await startRoute(t, {}, {
    async upstream (request) {
      await new Promise((resolve) => setImmediate(resolve))
      return {
        url: `${up.origin}/built`,
        method: 'POST',
        headers: { authorization: String(request.headers.authorization), 'content-type': 'text/plain' },
        body: 'built body'
      }
    },
    async handler (_request, reply, res) {
      reply.finish(await res!.body.json() as Record<string, unknown>)
    }
  })
  const res = await request(`${url}/`, { headers: { authorization: 'Bearer chosen' } })
  t.equal(res.statusCode, 200)
  const seen = JSON.parse(res.body)
  t.equal(seen.method, 'POST')
  t.equal(seen.url, '/built')
  t.equal(seen.body, 'built body')
  t.equal(seen.headers.authorization, 'Bearer chosen', 'forwarded because the function put it there')
})

t.test('upstream refused: 502 and the handler is not called', async (t) => {
  const refused = await refusedOrigin()
  let called = 0
  const { url, logs } = await startRoute(t, {}, {
    upstream: `${refused}/`,
    handler (_request, reply) {
      called++
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.same(JSON.parse(res.body), UPSTREAM_ERROR)
  t.notOk(res.body.includes(new URL(refused).port), 'the answer does not name the upstream')
  t.equal(called, 0, 'the handler was not called')
  const errors = logsAt(logs, LEVEL.error)
  t.equal(errors.length, 1)
  t.match(errors[0]?.err, { message: /ECONNREFUSED/ }, 'the log keeps the cause')
})

t.test('upstream timing out before its head: 504 and the handler is not called', async (t) => {
  const up = await upstreamFor(t, () => {})
  let called = 0
  const { url } = await startRoute(t, {}, {
    upstream: () => ({ url: up.url, headersTimeout: 100 }),
    handler (_request, reply) {
      called++
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
  t.equal(called, 0)
})

t.test('onUpstreamError is called instead of failing and can answer', async (t) => {
  const refused = await refusedOrigin()
  let handlerCalls = 0
  const { url, app } = await startRoute(t, {}, {
    upstream: `${refused}/`,
    onUpstreamError (error, request, reply) {
      reply.status(200).finish({ fallback: true, code: (error as { code?: string }).code, url: request.url })
    },
    handler (_request, reply) {
      handlerCalls++
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/?q=1`)
  t.equal(res.statusCode, 200)
  t.same(JSON.parse(res.body), { fallback: true, code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', url: '/?q=1' })
  t.equal(handlerCalls, 0)
  t.equal(app.asyncRoute.stats().finished, 1)
})

t.test('onUpstreamError that throws fails the reply with 500', async (t) => {
  const refused = await refusedOrigin()
  const { url, logs } = await startRoute(t, {}, {
    upstream: `${refused}/`,
    onUpstreamError () {
      throw new Error('fallback broke')
    },
    handler (_request, reply) {
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.same(JSON.parse(res.body), { statusCode: 500, error: 'Internal Server Error', message: 'fallback broke' })
  t.equal(logsAt(logs, LEVEL.error, 'fallback broke').length, 1)
})

t.test('an async onUpstreamError that rejects fails the reply too', async (t) => {
  const refused = await refusedOrigin()
  const { url } = await startRoute(t, {}, {
    upstream: `${refused}/`,
    async onUpstreamError (error) {
      throw error
    },
    handler (_request, reply) {
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
})

t.test('an upstream function that throws gives an error answer and the handler is not called', async (t) => {
  let called = 0
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/sync', {
      upstream () {
        throw Object.assign(new Error('no such tenant'), { statusCode: 404, code: 'E_TENANT' })
      },
      handler (_request, reply) {
        called++
        reply.finish('handler')
      }
    })
    asyncGet(app, '/async', {
      async upstream () {
        throw new Error('lookup failed')
      },
      handler (_request, reply) {
        called++
        reply.finish('handler')
      }
    })
  })
  const sync = await request(`${url}/sync`)
  t.equal(sync.statusCode, 404)
  t.same(JSON.parse(sync.body), { statusCode: 404, code: 'E_TENANT', error: 'Not Found', message: 'no such tenant' })
  const rejected = await request(`${url}/async`)
  t.equal(rejected.statusCode, 500)
  t.equal(JSON.parse(rejected.body).message, 'lookup failed')
  t.equal(called, 0)
})

t.test('the watchdog covers the upstream step: 504 and the handler is not called', async (t) => {
  const up = await upstreamFor(t, () => {})
  let called = 0
  let fallback = 0
  const { url, app } = await startRoute(t, {}, {
    timeout: 100,
    upstream: up.url,
    onUpstreamError (_error, _request, reply) {
      fallback++
      reply.finish('fallback')
    },
    handler (_request, reply) {
      called++
      reply.finish('handler')
    }
  })
  const res = await request(`${url}/`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  await waitFor(() => up.openSockets() === 0, 2000, 'the upstream request to be cancelled')
  t.equal(called, 0, 'the handler was not called')
  t.equal(fallback, 0, 'onUpstreamError is not called for a cancelled request')
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

t.test('an upstream response the handler never reads is released when it finishes', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('unread body'))
  const dispatcher = new Agent({ connections: 1 })
  t.teardown(() => dispatcher.destroy())
  const { url } = await startRoute(t, { dispatcher }, {
    upstream: up.url,
    handler (_request, reply) {
      reply.finish('ignored the body')
    }
  })
  for (let i = 0; i < 4; i++) {
    const res = await request(`${url}/`, { timeout: 3000 })
    t.equal(res.body, 'ignored the body')
  }
  t.equal(up.connections(), 1, 'the one pool connection was reused every time')
})
