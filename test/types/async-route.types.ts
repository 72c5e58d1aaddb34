// Type tests of the published declarations (imported by the package's own name, so dist/ is
// what is checked). Checked by `npm run typecheck` (tsc --noEmit); never run. Every
// `@ts-expect-error` below fails the check if the line it covers stops being an error.
import type { Http2ServerResponse, Http2Server } from 'node:http2'
import type { ServerResponse } from 'node:http'
import { type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { expectTypeOf } from 'expect-type'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import asyncRoute, {
  asyncRoute as namedAsyncRoute,
  TimeoutError,
  BadPathError,
  BodyTooLargeError,
  RewriteHeadersError,
  type AsyncReply,
  type CompressOptions,
  type RenderError,
  type RewriteHeaders,
  type ForwardOptions,
  type RetryPolicy,
  type AsyncRouteError,
  type AsyncRouteHandler,
  type AsyncRouteOptions,
  type AsyncRouteStats,
  type HangReport,
  type InflightReport,
  type InflightState,
  type PendingReply,
  type UpstreamResponse
} from 'fastify-async-route'

const app = Fastify()

// ---------------------------------------------------------------------------------------------
// The import forms and the plugin options.

expectTypeOf(namedAsyncRoute).toEqualTypeOf(asyncRoute)
expectTypeOf(asyncRoute.default).toEqualTypeOf(asyncRoute)
expectTypeOf(asyncRoute.asyncRoute).toEqualTypeOf(asyncRoute)
expectTypeOf(new TimeoutError()).toHaveProperty('code').toBeString()

await app.register(asyncRoute)
await app.register(asyncRoute, {
  timeout: 0,
  closeGrace: 1_000,
  warnUnfinished: false,
  allowedOrigins: ['http://127.0.0.1:8080'],
  idleTimeout: 15_000,
  deadlineHeader: 'x-request-timeout-ms',
  maxPending: 10_000,
  onTimeout (request, reply, report) {
    expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
    expectTypeOf(report).toEqualTypeOf<HangReport>()
    reply.fail(new Error(`hung for ${report.elapsedMs} ms`))
  }
})
// @ts-expect-error a timeout is a number of ms
await app.register(asyncRoute, { timeout: '10s' })
// @ts-expect-error warnUnfinished is ms or false, not true
await app.register(asyncRoute, { warnUnfinished: true })
// @ts-expect-error allowedOrigins is a list
await app.register(asyncRoute, { allowedOrigins: 'http://127.0.0.1:8080' })
// @ts-expect-error a misspelt option is an error, not silently ignored
await app.register(asyncRoute, { timeot: 1000 })
// @ts-expect-error a dispatcher must be an undici Dispatcher
await app.register(asyncRoute, { dispatcher: {} })
// @ts-expect-error onTimeout gets (request, reply, report), and the report is not a string
await app.register(asyncRoute, { onTimeout: (_request, _reply, report: string) => report })
// @ts-expect-error maxPending is a number
await app.register(asyncRoute, { maxPending: true })
// @ts-expect-error deadlineHeader is a header name
await app.register(asyncRoute, { deadlineHeader: 5 })

// Per-route budgets and watchdog hooks.
app.asyncRoute({
  method: 'GET',
  url: '/poll',
  timeout: 30_000,
  idleTimeout: 0,
  maxPending: 100,
  warnUnfinished: false,
  onWatchdog (request, reply, report) {
    expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
    expectTypeOf(report).toEqualTypeOf<HangReport>()
    reply.finish({ messages: [] })
  },
  handler () {}
})
// @ts-expect-error warnUnfinished is ms or false
app.asyncRoute({ method: 'GET', url: '/w', warnUnfinished: true, handler () {} })
// @ts-expect-error onWatchdog gets a report object
app.asyncRoute({ method: 'GET', url: '/o', onWatchdog: (_request, _reply, report: number) => report, handler () {} })

// ---------------------------------------------------------------------------------------------
// The decorator: chainable like app.route(), with introspection.

expectTypeOf(app.asyncRoute({ method: 'GET', url: '/', handler () {} })).toEqualTypeOf<FastifyInstance>()
expectTypeOf(app.asyncRoute.pending()).toEqualTypeOf<PendingReply[]>()
expectTypeOf(app.asyncRoute.stats()).toEqualTypeOf<AsyncRouteStats>()
// An in-flight entry of a report or of pending() may say where the request is.
expectTypeOf<HangReport['inflight'][number]>().toEqualTypeOf<InflightReport>()
expectTypeOf<PendingReply['inflight'][number]>().toEqualTypeOf<InflightReport>()
expectTypeOf<InflightReport['state']>().toEqualTypeOf<InflightState | undefined>()
expectTypeOf<InflightState>().toEqualTypeOf<'queued' | 'sent' | 'receiving' | 'retry-wait'>()
expectTypeOf<{ method: string, url: string, ageMs: number }>().toExtend<InflightReport>()
// @ts-expect-error no other state
expectTypeOf<{ method: string, url: string, ageMs: number, state: 'connecting' }>().toExtend<InflightReport>()

// @ts-expect-error a route needs a handler
app.asyncRoute({ method: 'GET', url: '/' })
// @ts-expect-error a route needs a url
app.asyncRoute({ method: 'GET', handler () {} })
// @ts-expect-error a route's timeout is a number of ms
app.asyncRoute({ method: 'GET', url: '/', timeout: '1s', handler () {} })
// @ts-expect-error a misspelt route option too
app.asyncRoute({ method: 'GET', url: '/', timeot: 1000, handler () {} })
// @ts-expect-error upstream is a URL, a string or a function of the request
app.asyncRoute({ method: 'GET', url: '/', upstream: 8080, handler () {} })

// Every option of app.route() is accepted.
app.asyncRoute({
  method: ['GET', 'POST'],
  url: '/all',
  config: { any: 'thing' },
  constraints: { host: 'example.com' },
  bodyLimit: 1024,
  logLevel: 'warn',
  exposeHeadRoute: false,
  schema: { querystring: { type: 'object' } },
  onRequest (_request, _reply, done) { done() },
  async preHandler () {},
  handler () {}
})

// ---------------------------------------------------------------------------------------------
// The handler: `this`, the request, the reply.

app.asyncRoute({
  method: 'GET',
  url: '/plain',
  handler (request, reply, upstream) {
    expectTypeOf(this).toEqualTypeOf<FastifyInstance>()
    expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
    expectTypeOf(request.query).toBeUnknown()
    // (Both ways assignable: a deep toEqualTypeOf of the whole reply runs past expect-type's depth.)
    expectTypeOf(reply).toExtend<AsyncReply<FastifyRequest, ServerResponse>>()
    expectTypeOf<AsyncReply<FastifyRequest, ServerResponse>>().toExtend<typeof reply>()
    expectTypeOf(reply.request).toEqualTypeOf<FastifyRequest>()
    expectTypeOf(reply.raw).toEqualTypeOf<ServerResponse>()
    expectTypeOf(reply.signal).toEqualTypeOf<AbortSignal>()
    // Without an `upstream` option there is no third argument.
    expectTypeOf(upstream).toEqualTypeOf<UpstreamResponse | undefined>()
    // @ts-expect-error the upstream response may be undefined here
    upstream.statusCode.toFixed()

    // The response head and body.
    expectTypeOf(reply.status(201).header('x-a', 'b').headers({ 'x-c': 1 }).code(202)).toEqualTypeOf(reply)
    expectTypeOf(reply.write('chunk')).toBeBoolean()
    expectTypeOf(reply.write(new Uint8Array(1))).toBeBoolean()
    expectTypeOf(reply.flush()).toEqualTypeOf<Promise<void>>()
    expectTypeOf(reply.setTimeout(1000).onClose(() => {})).toEqualTypeOf(reply)
    expectTypeOf(reply.onEnd((outcome) => {
      expectTypeOf(outcome).toEqualTypeOf<'finished' | 'timedOut' | 'aborted' | 'failed'>()
    })).toEqualTypeOf(reply)
    // @ts-expect-error onEnd takes a function
    reply.onEnd('cleanup')
    reply.finish()
    reply.finish('text')
    reply.finish(Buffer.from('bytes'))
    reply.finish({ json: true })
    reply.finish([1, 2])
    reply.finish(null)
    // Any value: an interface, a class instance, `unknown`, a number (all sent as JSON).
    interface User { id: number, name: string }
    const user: User = { id: 1, name: 'ada' }
    reply.finish(user)
    class Point { constructor (readonly x: number, readonly y: number) {} }
    reply.finish(new Point(1, 2))
    const parsed: unknown = JSON.parse('{}')
    reply.finish(parsed)
    reply.finish(42)
    reply.finish(true)
    // @ts-expect-error write takes text or bytes
    reply.write({ not: 'a chunk' })
    // @ts-expect-error a header value is a string, a number or a list of strings
    reply.header('x-a', { no: 1 })
    // @ts-expect-error the reply's state is read-only
    reply.finished = true
    reply.fail(new Error('any error'))
    reply.fail('anything at all')
  }
})

// A handler may be async; its result is ignored.
app.asyncRoute({ method: 'GET', url: '/async', async handler (_request, reply) { await reply.flush() } })
app.asyncRoute({ method: 'GET', url: '/arrow', handler: (_request, reply) => reply.finish('arrow') })

// ---------------------------------------------------------------------------------------------
// What a handler returns: nothing, the reply, or a promise of either; a value is a type error.

app.asyncRoute({ method: 'GET', url: '/r1', handler (_request, reply) { reply.finish('x') } })
app.asyncRoute({ method: 'GET', url: '/r2', handler (_request, reply) { return reply.status(201).header('x-a', '1') } })
app.asyncRoute({ method: 'GET', url: '/r3', async handler (_request, reply) { return reply.redirect('/elsewhere') } })
app.asyncRoute({ method: 'GET', url: '/r4', async handler (_request, reply) { await reply.pipe('http://127.0.0.1:8080/') } })
app.asyncRoute({ method: 'GET', url: '/r5', handler: (_request, reply) => reply.pipe('http://127.0.0.1:8080/') })
app.asyncRoute({ method: 'GET', url: '/r6', handler: (_request, reply) => reply.finish('x') })
app.asyncRoute({ method: 'GET', url: '/r7', handler: async (_request, reply) => { reply.finish(await Promise.resolve('x')) } })
app.asyncRoute({
  method: 'GET',
  url: '/r8',
  // @ts-expect-error `return { … }` is not sent: call reply.finish(value)
  handler (_request, _reply) { return { id: 1 } }
})
app.asyncRoute({
  method: 'GET',
  url: '/r9',
  // @ts-expect-error nor is an async handler's value
  async handler (_request, _reply) { return 'text' }
})
// @ts-expect-error a fetch's response, returned, is not an answer either
app.asyncRoute({ method: 'GET', url: '/r10', handler: (_request, reply) => reply.fetch('http://127.0.0.1:8080/') })
expectTypeOf<ReturnType<AsyncRouteHandler>>().toEqualTypeOf<void | AsyncReply | Promise<void | AsyncReply>>()

// ---------------------------------------------------------------------------------------------
// fetch: promise form, and the callback forms with `res` narrowed by the `err` check.

app.asyncRoute({
  method: 'GET',
  url: '/fetch',
  async handler (_request, reply) {
    const res = await reply.fetch('http://127.0.0.1:8080/', { headers: { accept: 'text/plain' }, headersTimeout: 1000 })
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
    expectTypeOf(res.statusCode).toBeNumber()
    expectTypeOf(reply.fetch(new URL('http://127.0.0.1:8080/'))).toEqualTypeOf<Promise<UpstreamResponse>>()

    reply.fetch('http://127.0.0.1:8080/', (err, res) => {
      if (err) {
        expectTypeOf(err).toEqualTypeOf<AsyncRouteError>()
        // Every error the plugin passes carries a code and the status it answers with.
        expectTypeOf(err.code).toBeString()
        expectTypeOf(err.statusCode).toBeNumber()
        expectTypeOf(res).toBeUndefined()
        return reply.fail(err)
      }
      expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
      void res.body.dump()
    })
    reply.fetch('http://127.0.0.1:8080/', { method: 'POST', body: 'x' }, (err, res) => {
      if (err) return reply.fail(err)
      reply.finish(String(res.statusCode))
    })
    reply.fetch('http://127.0.0.1:8080/', (err, res) => {
      // @ts-expect-error `res` may be undefined until `err` is checked
      reply.finish(String(res.statusCode))
      return err
    })
    // A callback that only looks at the error.
    reply.fetch('http://127.0.0.1:8080/', (err) => { if (err !== null) reply.fail(err) })
    reply.fetch('http://127.0.0.1:8080/', undefined, (err) => { if (err !== null) reply.fail(err) })
    // The callback forms return nothing to await.
    expectTypeOf(reply.fetch('http://127.0.0.1:8080/', () => {})).toBeVoid()
    // @ts-expect-error the URL is a string or a URL
    await reply.fetch(8080)
    // A signal of the caller's, combined with the reply's.
    await reply.fetch('http://127.0.0.1:8080/', { signal: AbortSignal.timeout(100) })
    // @ts-expect-error a signal is an AbortSignal
    await reply.fetch('http://127.0.0.1:8080/', { signal: 'stop' })

    // pipe: a response, a URL, or request options; never rejects.
    expectTypeOf(reply.pipe(res)).toEqualTypeOf<Promise<void>>()
    void reply.pipe('http://127.0.0.1:8080/')
    void reply.pipe({ url: 'http://127.0.0.1:8080/', method: 'POST', body: 'x' })
    // @ts-expect-error request options need a url
    void reply.pipe({ method: 'POST' })
  }
})

// ---------------------------------------------------------------------------------------------
// The route generic types the request, the reply's request and the hooks, as with app.route().

interface ItemRoute {
  Params: { id: string }
  Querystring: { verbose?: boolean }
  Body: { name: string, tags: string[] }
  Headers: { 'x-token': string }
}

app.asyncRoute<ItemRoute>({
  method: 'PUT',
  url: '/items/:id',
  preHandler (request, _reply, done) {
    expectTypeOf(request.params.id).toBeString()
    done()
  },
  handler (request, reply) {
    expectTypeOf(request.params).toEqualTypeOf<{ id: string }>()
    expectTypeOf(request.query).toEqualTypeOf<{ verbose?: boolean }>()
    expectTypeOf(request.body).toEqualTypeOf<{ name: string, tags: string[] }>()
    expectTypeOf(request.headers['x-token']).toBeString()
    expectTypeOf(request.headers['user-agent']).toEqualTypeOf<string | undefined>()
    expectTypeOf(reply.request.params).toEqualTypeOf<{ id: string }>()
    expectTypeOf(reply.request.body.tags).toEqualTypeOf<string[]>()
    // @ts-expect-error the route has no :name parameter
    reply.finish(request.params.name)
    // @ts-expect-error id is a string
    reply.finish(request.params.id.toFixed())
    // @ts-expect-error the body's name is a string, not a number
    const count: number = request.body.name
    reply.finish({ id: request.params.id, count })
  }
})

// The same through `upstream` and `onUpstreamError`.
app.asyncRoute<{ Params: { id: string } }>({
  method: 'GET',
  url: '/proxy/:id',
  upstream (request) {
    expectTypeOf(request.params).toEqualTypeOf<{ id: string }>()
    return { url: `http://127.0.0.1:8080/items/${request.params.id}`, headers: { 'x-id': request.params.id } }
  },
  onUpstreamError (error, request, reply) {
    expectTypeOf(error).toEqualTypeOf<AsyncRouteError>()
    expectTypeOf(request.params.id).toBeString()
    expectTypeOf(reply.request.params.id).toBeString()
    reply.status(503).finish({ retry: request.params.id })
  },
  handler (request, reply, res) {
    expectTypeOf(request.params.id).toBeString()
    // With `upstream`, the third argument is the (defined) upstream response.
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
    void reply.pipe(res)
  }
})

// An upstream function may be async, and return a URL.
app.asyncRoute({
  method: 'GET',
  url: '/later',
  upstream: async () => new URL('http://127.0.0.1:8080/'),
  handler (_request, reply, res) {
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
    void reply.pipe(res)
  }
})
app.asyncRoute({
  method: 'GET',
  url: '/fixed',
  upstream: 'http://127.0.0.1:8080/',
  handler (_request, reply, res) {
    reply.finish(String(res.statusCode))
  }
})
// @ts-expect-error the upstream function returns a URL, a string or request options
app.asyncRoute({ method: 'GET', url: '/', upstream: () => 8080, handler () {} })
// An upstream that may or may not be there: the third argument may be undefined.
declare const maybeUpstream: string | undefined
app.asyncRoute({
  method: 'GET',
  url: '/maybe',
  upstream: maybeUpstream,
  handler (_request, reply, res) {
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse | undefined>()
    reply.finish(String(res?.statusCode))
  }
})

// Handlers and options declared apart from the call, with the exported types.
const getItem: AsyncRouteHandler<{ Params: { id: string } }> = function (request, reply, res) {
  expectTypeOf(this).toEqualTypeOf<FastifyInstance>()
  expectTypeOf(res).toEqualTypeOf<UpstreamResponse | undefined>()
  reply.finish(request.params.id)
}
app.asyncRoute<{ Params: { id: string } }>({ method: 'GET', url: '/apart/:id', handler: getItem })
// A handler that copes without an upstream response also fits a route that has one.
app.asyncRoute<{ Params: { id: string } }>({ method: 'GET', url: '/apart-up/:id', upstream: 'http://127.0.0.1:8080/', handler: getItem })
const apart: AsyncRouteOptions<{ Querystring: { q: string } }> = {
  method: 'GET',
  url: '/apart',
  handler (request, reply) { reply.finish(request.query.q) }
}
expectTypeOf(app.asyncRoute(apart)).toEqualTypeOf<FastifyInstance>()
// @ts-expect-error a handler typed for other params does not fit the route's
app.asyncRoute<{ Params: { other: number } }>({ method: 'GET', url: '/apart-wrong/:other', handler: getItem })

// ---------------------------------------------------------------------------------------------
// A type provider types the request from the route's schema.

const typed = app.withTypeProvider<TypeBoxTypeProvider>()
const chained = typed.asyncRoute({
  method: 'POST',
  url: '/sum/:a',
  schema: {
    params: Type.Object({ a: Type.Number() }),
    querystring: Type.Object({ n: Type.Number(), label: Type.Optional(Type.String()) }),
    body: Type.Object({ values: Type.Array(Type.Number()) }),
    headers: Type.Object({ 'x-unit': Type.String() })
  },
  upstream (request) {
    expectTypeOf(request.query.n).toBeNumber()
    return `http://127.0.0.1:8080/?n=${request.query.n}`
  },
  handler (request, reply, res) {
    expectTypeOf(request.params).toEqualTypeOf<{ a: number }>()
    expectTypeOf(request.query.n).toBeNumber()
    expectTypeOf(request.query.label).toEqualTypeOf<string | undefined>()
    expectTypeOf(request.body.values).toEqualTypeOf<number[]>()
    expectTypeOf(request.headers['x-unit']).toBeString()
    expectTypeOf(reply.request.query.n).toBeNumber()
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
    // @ts-expect-error n is a number
    request.query.n.toUpperCase()
    // @ts-expect-error the querystring schema has no "m"
    reply.finish(String(request.query.m))
    reply.finish({ sum: request.body.values.reduce((a, b) => a + b, request.params.a) })
  }
})
// The instance it returns keeps the type provider.
expectTypeOf(chained).toEqualTypeOf(typed)
typed.asyncRoute({
  method: 'GET',
  url: '/n',
  schema: { querystring: Type.Object({ n: Type.Integer() }) },
  handler (request, reply, res) {
    expectTypeOf(request.query).toEqualTypeOf<{ n: number }>()
    expectTypeOf(res).toEqualTypeOf<UpstreamResponse | undefined>()
    reply.finish(String(request.query.n + 1))
  }
})
// Child scopes and typed instances have `asyncRoute` too.
await app.register(async (child) => {
  expectTypeOf(child.asyncRoute.stats()).toEqualTypeOf<AsyncRouteStats>()
  child.withTypeProvider<TypeBoxTypeProvider>().asyncRoute({
    method: 'GET',
    url: '/child',
    schema: { params: Type.Object({ id: Type.String() }) },
    handler (request, reply) { reply.finish(request.params.id) }
  })
})

// ---------------------------------------------------------------------------------------------
// An HTTP/2 server: the raw response is an Http2ServerResponse.

const h2 = Fastify({ http2: true })
await h2.register(asyncRoute)
expectTypeOf(h2.server).toEqualTypeOf<Http2Server>()
h2.asyncRoute({
  method: 'GET',
  url: '/',
  handler (_request, reply) {
    expectTypeOf(reply.raw).toEqualTypeOf<Http2ServerResponse>()
    reply.finish('h2')
  }
})

// ---------------------------------------------------------------------------------------------
// Forwarding and retries.

{
  const policy: RetryPolicy = { attempts: 3, methods: ['GET', 'PUT'], statusCodes: [503], errorCodes: ['ECONNRESET'], minDelay: 10, maxDelay: 100 }
  void app.register(asyncRoute, { retry: policy })
  void app.register(asyncRoute, { retry: {} })
  // @ts-expect-error attempts is a number
  void app.register(asyncRoute, { retry: { attempts: '3' } })
  app.asyncRoute({
    method: 'GET',
    url: '/forwarded/*',
    retry: { attempts: 2 },
    upstream: (request) => ({ url: `http://127.0.0.1:8080${request.url}`, retry: { attempts: 2 } }),
    async handler (request, reply) {
      expectTypeOf(reply.forward('http://127.0.0.1:8080' + request.url)).toEqualTypeOf<Promise<void>>()
      const options: ForwardOptions = { headers: { 'x-a': 'b', cookie: null, 'x-n': 1, 'x-l': ['a'] }, xForwarded: false, retry: policy, headersTimeout: 1, bodyTimeout: 1 }
      void reply.forward(new URL('http://127.0.0.1:8080/'), options)
      // @ts-expect-error forward takes forward options, not undici's
      void reply.forward('http://127.0.0.1:8080/', { method: 'POST' })
      void reply.pipe('http://127.0.0.1:8080/', { retry: { attempts: 2 } })
      void reply.pipe({ url: 'http://127.0.0.1:8080/', retry: { statusCodes: [502] } })
      const res = await reply.fetch('http://127.0.0.1:8080/', { retry: { minDelay: 0 } })
      expectTypeOf(res).toEqualTypeOf<UpstreamResponse>()
    }
  })
  expectTypeOf(new BadPathError()).toHaveProperty('code')
}

// ---------------------------------------------------------------------------------------------
// The app's own error format, compression, the headers the app keeps, upload limits.

{
  const problem: RenderError = (error, request, reply) => {
    expectTypeOf(error).toEqualTypeOf<AsyncRouteError>()
    expectTypeOf(error.statusCode).toEqualTypeOf<number>()
    expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
    reply.status(error.statusCode).type('application/problem+json').finish({ type: error.code, status: error.statusCode })
  }
  void app.register(asyncRoute, { renderError: problem, compress: true })
  void app.register(asyncRoute, { compress: { threshold: 0, encodings: ['gzip', 'br'], brotliQuality: 5, level: 9 } })
  const compress: CompressOptions = { encodings: ['deflate'] }
  void app.register(asyncRoute, { compress })
  // @ts-expect-error no such encoding
  void app.register(asyncRoute, { compress: { encodings: ['zstd'] } })
  // @ts-expect-error renderError is a function
  void app.register(asyncRoute, { renderError: 'problem+json' })
  const keepOurs: RewriteHeaders = (headers, request) => {
    expectTypeOf(headers.server).toEqualTypeOf<string | string[] | undefined>()
    expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
    const { server, ...rest } = headers
    return { ...rest, 'x-powered-by': null, location: undefined }
  }
  app.asyncRoute({
    method: 'POST',
    url: '/gateway/*',
    compress: false,
    renderError: problem,
    async handler (request, reply) {
      await reply.forward('http://127.0.0.1:8080' + request.url, { rewriteHeaders: keepOurs, bodyLimit: 1024 * 1024 })
      await reply.pipe('http://127.0.0.1:8080/', { rewriteHeaders: keepOurs })
      await reply.pipe(await reply.fetch('http://127.0.0.1:8080/'), { rewriteHeaders: keepOurs })
      // @ts-expect-error fetch relays nothing: no rewriteHeaders
      await reply.fetch('http://127.0.0.1:8080/', { rewriteHeaders: keepOurs })
    }
  })
  // @ts-expect-error bodyLimit is a number of bytes
  const limited: ForwardOptions = { bodyLimit: '1mb' }
  void limited
  expectTypeOf(new BodyTooLargeError()).toHaveProperty('statusCode')
  expectTypeOf(new RewriteHeadersError()).toHaveProperty('code')
}
