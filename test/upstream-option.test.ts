// The `upstream` route option and `onUpstreamError`, the `dispatcher` and `allowedOrigins`
// plugin options, and upstream bodies that a handler never reads.
import t from 'tap'
import { Agent, request as undiciRequest, type Dispatcher } from 'undici'
import { LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { echo, refusedOrigin, upstreamFor } from './helpers/upstream.js'

/** An Agent that counts the requests dispatched through it. */
class CountingAgent extends Agent {
  dispatched = 0
  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.dispatched++
    return super.dispatch(options, handler)
  }
}

// ---- the upstream option ----

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
  t.same(JSON.parse(res.body), {
    statusCode: 502,
    code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR',
    error: 'Bad Gateway',
    message: 'The upstream request failed'
  })
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
    app.asyncRoute({
      method: 'GET',
      url: '/sync',
      upstream () {
        throw Object.assign(new Error('no such tenant'), { statusCode: 404, code: 'E_TENANT' })
      },
      handler (_request, reply) {
        called++
        reply.finish('handler')
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/async',
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

// ---- dispatcher ----

t.test('a user dispatcher is used by fetch, pipe and upstream, and app.close() does not close it', async (t) => {
  const up = await upstreamFor(t, (req, res) => res.end(`hello ${req.url}`))
  const dispatcher = new CountingAgent()
  t.teardown(() => dispatcher.destroy())
  const { url, app } = await startApp(t, { dispatcher }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/fetch',
      async handler (_request, reply) {
        const res = await reply.fetch(`${up.origin}/a`)
        reply.finish(await res.body.text())
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/pipe',
      handler (_request, reply) {
        return reply.pipe(`${up.origin}/b`)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/upstream',
      upstream: `${up.origin}/c`,
      handler (_request, reply, res) {
        return reply.pipe(res!)
      }
    })
  })
  t.equal((await request(`${url}/fetch`)).body, 'hello /a')
  t.equal((await request(`${url}/pipe`)).body, 'hello /b')
  t.equal((await request(`${url}/upstream`)).body, 'hello /c')
  t.equal(dispatcher.dispatched, 3, 'every upstream request went through the user dispatcher')
  t.equal(up.openSockets(), 1, 'its pool keeps the connection')
  await app.close()
  t.notOk(dispatcher.closed, 'the user dispatcher is not closed')
  t.notOk(dispatcher.destroyed, 'nor destroyed')
  t.equal(up.openSockets(), 1, 'its pooled connection is still open')
  const after = await undiciRequest(`${up.origin}/after`, { dispatcher })
  t.equal(await after.body.text(), 'hello /after', 'it still works after app.close()')
  t.equal(dispatcher.dispatched, 4)
})

t.test('the plugin\'s own dispatcher is closed by app.close(): its upstream sockets get closed', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('pooled'))
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(await res.body.text())
  })
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal(up.connections(), 1, 'one keep-alive connection, reused')
  t.equal(up.openSockets(), 1, 'kept open in the plugin\'s pool')
  await app.close()
  // undici keeps this idle socket about 3 s (the upstream's keep-alive hint less its 2 s
  // margin): closing within 1.5 s is app.close(), not that timeout.
  await waitFor(() => up.openSockets() === 0, 1500, 'the pooled upstream socket to close')
  t.equal(up.openSockets(), 0)
})

// ---- allowedOrigins ----

t.test('allowedOrigins: fetch, pipe(url) and upstream to a denied origin give 500 FST_ASYNC_ROUTE_ORIGIN_DENIED without connecting', async (t) => {
  const allowed = await upstreamFor(t)
  const denied = await upstreamFor(t)
  let called = 0
  const { url, logs } = await startApp(t, { allowedOrigins: [allowed.origin] }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/fetch',
      async handler (_request, reply) {
        const res = await reply.fetch(`${denied.origin}/x`)
        reply.finish(await res.body.text())
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/pipe',
      handler (_request, reply) {
        return reply.pipe(`${denied.origin}/x`)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/upstream',
      upstream: `${denied.origin}/x`,
      handler (_request, reply) {
        called++
        reply.finish('handler')
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/invalid',
      async handler (_request, reply) {
        await reply.fetch('not a url at all')
        reply.finish('unexpected')
      }
    })
  })
  for (const path of ['/fetch', '/pipe', '/upstream', '/invalid']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 500, `${path}: 500`)
    t.same(JSON.parse(res.body), {
      statusCode: 500,
      code: 'FST_ASYNC_ROUTE_ORIGIN_DENIED',
      error: 'Internal Server Error',
      message: 'The upstream origin is not allowed'
    }, `${path}: origin denied`)
    t.notOk(res.body.includes(new URL(denied.origin).port), `${path}: the answer does not name the denied origin`)
  }
  t.equal(called, 0, 'the handler was not called')
  t.equal(denied.connections(), 0, 'the denied upstream saw no connection')
  t.equal(allowed.connections(), 0)
  const warnings = logsAt(logs, LEVEL.warn, 'allowedOrigins')
  t.equal(warnings.length, 4, 'each denial is logged as a warning')
  t.match(warnings[0], { upstream: `${denied.origin}/x` }, 'the warning names the denied upstream')
})

t.test('allowedOrigins: an allowed origin (given with a trailing slash) works for fetch, pipe and upstream', async (t) => {
  const up = await upstreamFor(t, (req, res) => res.end(`allowed ${req.url}`))
  const { url } = await startApp(t, { allowedOrigins: ['http://192.0.2.1:1', `${up.origin}/`] }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/fetch',
      async handler (_request, reply) {
        const res = await reply.fetch(`${up.origin}/f`)
        reply.finish(await res.body.text())
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/pipe',
      handler (_request, reply) {
        return reply.pipe(new URL('/p', up.origin))
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/upstream',
      upstream: () => ({ url: `${up.origin}/u` }),
      handler (_request, reply, res) {
        return reply.pipe(res!)
      }
    })
  })
  t.equal((await request(`${url}/fetch`)).body, 'allowed /f')
  t.equal((await request(`${url}/pipe`)).body, 'allowed /p')
  t.equal((await request(`${url}/upstream`)).body, 'allowed /u')
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

// ---- unread bodies ----

t.test('bodies a handler never reads are released: more requests than pool connections all complete', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('x'.repeat(1000)))
  const dispatcher = new Agent({ connections: 2 })
  t.teardown(() => dispatcher.destroy())
  const { url, app } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(`status ${res.statusCode}`)
  })
  // Five at once, then five one after the other.
  const concurrent = await Promise.all(Array.from({ length: 5 }, () => request(`${url}/`, { timeout: 3000 })))
  for (const res of concurrent) t.equal(res.body, 'status 200')
  for (let i = 0; i < 5; i++) {
    const res = await request(`${url}/`, { timeout: 3000 })
    t.equal(res.body, 'status 200')
  }
  t.equal(up.requests.length, 10, 'every request reached the upstream')
  t.ok(up.connections() <= 2, `the pool never needed more than its 2 connections (${up.connections()})`)
  t.same(app.asyncRoute.stats(), { started: 10, finished: 10, timedOut: 0, aborted: 0, failed: 0, pending: 0 })
})

t.test('a large body a handler never reads does not hold the pool', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 4 * 1024 * 1024)
    res.end(Buffer.alloc(4 * 1024 * 1024, 'z'))
  })
  const dispatcher = new Agent({ connections: 1 })
  t.teardown(() => dispatcher.destroy())
  const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(`length ${String(res.headers['content-length'])}`)
  })
  for (let i = 0; i < 3; i++) {
    const res = await request(`${url}/`, { timeout: 3000 })
    t.equal(res.body, `length ${4 * 1024 * 1024}`)
  }
  t.equal(up.requests.length, 3)
  await waitFor(() => up.openSockets() <= 1, 2000, 'no more than the pool\'s one connection open')
})

t.test('an unread body whose upstream dies afterwards does not crash the process', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1_000_000)
    res.write(Buffer.alloc(10_000), () => setTimeout(() => res.socket?.destroy(), 30))
  })
  const { url } = await startRoute(t, {}, async (_request, reply) => {
    await reply.fetch(up.url)
    reply.finish('finished without reading')
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'finished without reading')
  await waitFor(() => up.openSockets() === 0, 2000, 'the upstream socket to go')
  const again = await request(`${url}/`)
  t.equal(again.body, 'finished without reading', 'the app still serves')
})

t.test('a reply that fails with an unread upstream body destroys it: the upstream connection is closed', async (t) => {
  let upstreamClosed = false
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1_000_000)
    res.on('close', () => { upstreamClosed = true })
    res.write(Buffer.alloc(1000))
  })
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    await reply.fetch(up.url)
    throw Object.assign(new Error('gave up'), { statusCode: 503 })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 503)
  t.equal(JSON.parse(res.body).message, 'gave up')
  await waitFor(() => upstreamClosed && up.openSockets() === 0, 2000, 'the upstream response to be torn down')
  t.equal(app.asyncRoute.stats().failed, 1)
})

t.test('a fetched body counts as in flight until read: pending() lists it, then not', async (t) => {
  let release!: () => void
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 10)
    res.write('01234')
    release = () => res.end('56789')
  })
  let readStarted = false
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(`${up.origin}/slow-body`)
    readStarted = true
    reply.finish(await res.body.text())
  })
  const pending = request(`${url}/`, { timeout: 5000 })
  await waitFor(() => readStarted, 2000, 'the handler to read the body')
  const [entry] = app.asyncRoute.pending()
  t.equal(entry?.inflight.length, 1, 'the body being read is in flight')
  t.equal(entry?.inflight[0]?.url, `${up.origin}/slow-body`)
  t.equal(entry?.inflight[0]?.method, 'GET')
  release()
  const res = await pending
  t.equal(res.body, '0123456789')
  t.same(app.asyncRoute.pending(), [])
})

t.test('an upstream body that fails while the handler is busy elsewhere does not crash the process', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('content-length', 1000)
    res.write('partial', () => setTimeout(() => res.socket?.destroy(), 10))
  })
  const { url, logs } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    // Busy with something else (no reader on the body) while the upstream dies.
    await new Promise((resolve) => res.body.once('close', resolve))
    reply.finish('carried on')
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'carried on')
  t.same(logsAt(logs, LEVEL.error), [])
})
