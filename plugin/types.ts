// Public types and the `declare module 'fastify'` augmentation. Imports nothing of ours.
import type {
  ContextConfigDefault,
  FastifyBaseLogger,
  FastifyInstance,
  FastifyPluginCallback,
  FastifyRequest,
  FastifySchema,
  FastifyTypeProvider,
  FastifyTypeProviderDefault,
  HTTPMethods,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerBase,
  RawServerDefault,
  RouteGenericInterface,
  RouteShorthandOptions
} from 'fastify'
import type { Dispatcher } from 'undici'

/**
 * An undici dispatcher of undici 7 or undici 8: `Agent`, `Pool`, `Client`, `ProxyAgent`,
 * `RetryAgent`, any of them `.compose()`d with interceptors. Described by what the plugin
 * calls, `dispatch()` (with handlers in the form both majors take), so that either major's
 * declarations fit.
 */
export interface AnyDispatcher {
  dispatch (options: Dispatcher.DispatchOptions, handler: object): boolean
}

/** The undici response that `fetch` resolves with and the `upstream` option passes on. */
export type UpstreamResponse = Dispatcher.ResponseData<unknown>

/**
 * When an upstream request is tried again (see the README's retry table). Given as the
 * plugin's `retry`, a route's, or a call's own; each level replaces the one above field by field.
 */
export interface RetryPolicy {
  /** Total tries including the first, 1 to 10. Default 1 (no retry). */
  attempts?: number
  /** Methods that may be retried. Default `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`. */
  methods?: readonly string[]
  /** Response statuses that are retried. Default `502`, `503`, `504`. */
  statusCodes?: readonly number[]
  /** Error codes that are retried. Default refused/reset connections, socket errors, connect and headers timeouts. */
  errorCodes?: readonly string[]
  /** ms, 0 to 60000; the shortest wait before a retry. Default 25. */
  minDelay?: number
  /** ms, 0 to 60000, at least `minDelay`; the longest backoff. Default 250. */
  maxDelay?: number
}

/** undici's request options, less what the plugin sets itself (dispatcher, signal), plus `retry`. */
export type PipeOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method' | 'signal'> & {
  method?: Dispatcher.HttpMethod | (string & {})
  /** This request's retry policy, over the route's. */
  retry?: RetryPolicy
  /** `pipe` and `forward` only: the upstream's headers to relay (see `RewriteHeaders`). */
  rewriteHeaders?: RewriteHeaders
}

/**
 * `pipe(res | url, { rewriteHeaders })`, `forward(url, { rewriteHeaders })`: gets the upstream's
 * response headers (hop-by-hop ones already removed, names in lower case) and returns those to
 * relay; a value `undefined` or `null` means no such header. Drop `server`, rewrite `location`,
 * or keep the app's own CORS and security headers over the upstream's. A throw fails the reply
 * with 500 before anything is sent.
 */
export type RewriteHeaders = (
  headers: Record<string, string | string[] | undefined>,
  request: FastifyRequest
) => Record<string, string | number | readonly string[] | null | undefined>

/** `reply.forward(url, options)`. */
export interface ForwardOptions {
  /**
   * Applied last, names matched without regard to case: a value replaces the header, `null`
   * removes it.
   */
  headers?: Record<string, string | number | readonly string[] | null>
  /** `false`: no `x-forwarded-*` header is added, incoming ones pass unchanged. Default `true`. */
  xForwarded?: boolean
  /** This request's retry policy, over the route's. */
  retry?: RetryPolicy
  /** The upstream's headers to relay (see `RewriteHeaders`). */
  rewriteHeaders?: RewriteHeaders
  /**
   * Bytes; caps a streamed request body (a pass-through parser's): a larger `content-length`
   * is refused before anything is sent, a body that grows past it ends the reply; both with
   * `413 FST_ASYNC_ROUTE_BODY_TOO_LARGE`. Parsed bodies are Fastify's to limit.
   */
  bodyLimit?: number
  headersTimeout?: number
  bodyTimeout?: number
}

/**
 * `fetch`'s options: undici's request options, and a `signal` of the caller's. Either that
 * signal or the reply's end cancels the request; aborted by the caller's signal, the fetch
 * rejects with that signal's reason and the reply is untouched.
 */
export type FetchOptions = Omit<PipeOptions, 'rewriteHeaders'> & { signal?: AbortSignal }

/** A whole upstream request: where, and optionally how. */
export type UpstreamRequest = PipeOptions & { url: string | URL }

/**
 * What `fetch` rejects with (or passes to its callback): the plugin's own errors, each with a
 * stable `code` (`FST_ASYNC_ROUTE_*`) and the HTTP `statusCode` it answers with. (A caller's
 * `signal` rejects with that signal's reason instead.)
 */
export interface AsyncRouteError extends Error {
  code: string
  statusCode: number
}

/** `(err, res)`: once `err` is checked, `res` is defined. */
export type FetchCallback = (
  ...args: [err: AsyncRouteError, res: undefined] | [err: null, res: UpstreamResponse]
) => unknown

/** A `fetch` callback that takes only the error. */
export type ErrorFirstCallback = (err: AsyncRouteError | null) => unknown

/** How a reply ended, as `stats()` counts it. */
export type ReplyOutcome = 'finished' | 'timedOut' | 'aborted' | 'failed'

/** The hang report: where an unfinished reply was when the watchdog fired. */
export interface HangReport {
  id: string
  method: string
  url: string
  elapsedMs: number
  handlerSettled: boolean
  headersSent: boolean
  bytesWritten: number
  inflight: InflightReport[]
}

/** Where an in-flight upstream request is (see `InflightReport.state`). */
export type InflightState = 'queued' | 'sent' | 'receiving' | 'retry-wait'

export interface InflightReport {
  method: string
  url: string
  ageMs: number
  /**
   * Where the request is, when the plugin knows: `'queued'` while it waits for a connection
   * of its pool, `'sent'` once handed to a connection with no answer yet, `'receiving'` once
   * its response head arrived (the body is being read), `'retry-wait'` between tries. Absent
   * when unknown: `reply.fetch()` cannot see when undici writes its request, so before its
   * head arrives it carries no state (only `'retry-wait'` between tries).
   */
  state?: InflightState
}

export interface PendingReply {
  id: string
  method: string
  url: string
  ageMs: number
  headersSent: boolean
  handlerSettled: boolean
  inflight: InflightReport[]
}

export interface AsyncRouteStats {
  started: number
  finished: number
  timedOut: number
  aborted: number
  failed: number
  /** Requests answered `FST_ASYNC_ROUTE_OVERLOADED` (`maxPending`): never started, never pending. */
  rejected: number
  pending: number
}

/** The reply of an async route: open until `finish()`, `fail()` or the watchdog ends it. */
export interface AsyncReply<Request = FastifyRequest, RawReply = RawReplyDefaultExpression> {
  /** Sets the status code of the response (100–599); chainable. */
  status (code: number): this
  /** Alias of `status`. */
  code (code: number): this
  header (name: string, value: string | number | readonly string[]): this
  headers (headers: Record<string, string | number | readonly string[]>): this
  /** Sets `content-type`; chainable; ignored (with a warning) once the head is sent. */
  type (contentType: string): this
  /**
   * A header of the head the reply will send: the handler's, else one set before the handler
   * (a hook's); the name without regard to case. Once the head is sent, the head as sent.
   */
  getHeader (name: string): string | number | string[] | undefined
  /** Whether `getHeader(name)` has a value. */
  hasHeader (name: string): boolean
  /** Removes a header from the head the reply will send (a hook's too); chainable; ignored (with a warning) once the head is sent. */
  removeHeader (name: string): this
  /** Sets `location` and the status (default 302) and finishes the reply with an empty body, as Fastify's `reply.redirect`. */
  redirect (url: string, code?: number): this
  /** Writes a chunk, sending the head first if needed; `false` when the socket buffer is full. */
  write (chunk: string | Uint8Array): boolean
  /** Resolves once everything written so far was handed to the socket; sends the head. */
  flush (): Promise<void>
  /**
   * Ends the response: a string as text, bytes as octets, any other value as JSON, nothing as
   * an empty body.
   */
  finish (body?: unknown): void
  /** Ends the response with an error answer (or a cut connection once the head is out). */
  fail (error: unknown): void
  fetch (url: string | URL, options?: FetchOptions): Promise<UpstreamResponse>
  fetch (url: string | URL, callback: FetchCallback): void
  fetch (url: string | URL, options: FetchOptions | undefined, callback: FetchCallback): void
  // A callback that only looks at the error, `(err) => …`, which TypeScript does not accept
  // for the tuple-typed `FetchCallback`.
  fetch (url: string | URL, callback: ErrorFirstCallback): void
  fetch (url: string | URL, options: FetchOptions | undefined, callback: ErrorFirstCallback): void
  /** Streams an upstream response (or performs the request) to the client; never rejects. */
  pipe (source: UpstreamResponse | string | URL | UpstreamRequest, options?: PipeOptions): Promise<void>
  /**
   * Sends the incoming request (method, cleaned headers, body as parsed or streamed) on to
   * `url` and relays the answer as `pipe(url)` does; never rejects.
   */
  forward (url: string | URL, options?: ForwardOptions): Promise<void>
  /** Re-arms the watchdog to fire `ms` from now; `0` disarms it. */
  setTimeout (ms: number): this
  /** Runs `fn` once if the client disconnects before the reply is finished. */
  onClose (fn: () => void): this
  /**
   * Runs `fn(outcome)` once when the reply ends in any way (synchronously if it already
   * ended): the one place for cleanup. A throw is logged, never raised.
   */
  onEnd (fn: (outcome: ReplyOutcome) => void): this
  readonly finished: boolean
  readonly headersSent: boolean
  readonly signal: AbortSignal
  /** The Fastify request, typed as the route's. */
  readonly request: Request
  /** The Node response (`ServerResponse`, or `Http2ServerResponse` on an HTTP/2 server). */
  readonly raw: RawReply
}

/*
 * The route types carry the same type parameters as Fastify's own (`RouteHandler`'s order), so
 * that `request.params`, `query`, `headers` and `body` come from the route generic
 * (`app.asyncRoute<{ Querystring: … }>`) or from the instance's type provider and the schema
 * (`app.withTypeProvider<TypeBoxTypeProvider>().asyncRoute({ schema: … })`).
 */

/** The request an async route's functions receive. */
export type AsyncRouteRequest<
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger
> = FastifyRequest<RouteGeneric, RawServer, RawRequest, SchemaCompiler, TypeProvider, ContextConfig, Logger>

/**
 * `handler(request, reply, upstreamResponse)`. The third argument is the `upstream` option's
 * response: defined on a route that has `upstream`, `undefined` on one that has not.
 */
export type AsyncRouteHandler<
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger,
  Upstream extends UpstreamResponse | undefined = UpstreamResponse | undefined
> = (
  this: FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>,
  request: AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, SchemaCompiler, TypeProvider, Logger>,
  reply: AsyncReply<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, SchemaCompiler, TypeProvider, Logger>, RawReply>,
  upstream: Upstream
) => AsyncRouteHandlerResult<AsyncReply<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, SchemaCompiler, TypeProvider, Logger>, RawReply>>

/**
 * What a handler may return: nothing, or the reply (`return reply.redirect(url)`), or a promise
 * of either. A value is never sent, so `return { … }` is a type error: call `reply.finish(value)`.
 */
export type AsyncRouteHandlerResult<Reply = AsyncReply> = void | Reply | Promise<void | Reply>

/** The `upstream` option: a URL (plain GET), or a function of the request returning what to request. */
export type UpstreamOption<Request = FastifyRequest> =
  | string
  | URL
  | ((request: Request) => string | URL | UpstreamRequest | Promise<string | URL | UpstreamRequest>)

/** What every `asyncRoute()` call accepts: `app.route()`'s options, less the handler, plus the plugin's. */
export interface AsyncRouteOptionsBase<
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger
> extends RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
  method: HTTPMethods | HTTPMethods[]
  url: string
  /** Watchdog for this route in ms; overrides the plugin's; `0` turns it off. */
  timeout?: number
  /** The plugin's `warnUnfinished` for this route; `false` turns it off. */
  warnUnfinished?: number | false
  /** The plugin's `idleTimeout` for this route, in ms; `0` turns it off. */
  idleTimeout?: number
  /** At most this many open replies of this route (checked in addition to the plugin's); `0`: no limit. */
  maxPending?: number
  /** The plugin's retry policy for this route, replaced field by field. */
  retry?: RetryPolicy
  /** The plugin's `compress` for this route; `false` turns it off. */
  compress?: boolean | CompressOptions
  /** The plugin's `renderError` for this route (not Fastify's route `errorHandler`). */
  renderError?: RenderError
  /**
   * The plugin's `onTimeout` for this route only, replacing it. (A route's `onTimeout` is
   * Fastify's own socket-timeout hook.)
   */
  onWatchdog?: (
    request: AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>,
    reply: AsyncReply<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>, RawReply>,
    report: HangReport
  ) => void
  /** Called instead of failing the reply when the `upstream` request fails. */
  onUpstreamError?: (
    error: AsyncRouteError,
    request: AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>,
    reply: AsyncReply<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>, RawReply>
  ) => unknown
}

/** Options of an async route, with or without `upstream` (the handler's third argument may be `undefined`). */
export interface AsyncRouteOptions<
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger
> extends AsyncRouteOptionsBase<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
  handler: AsyncRouteHandler<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>
  /** A request performed before the handler runs; its response is the handler's third argument. */
  upstream?: UpstreamOption<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>> | undefined
}

/** Options of an async route that has `upstream`: the handler's third argument is defined. */
export interface AsyncRouteOptionsWithUpstream<
  RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
  ContextConfig = ContextConfigDefault,
  SchemaCompiler extends FastifySchema = FastifySchema,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
  Logger extends FastifyBaseLogger = FastifyBaseLogger
> extends AsyncRouteOptionsBase<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, SchemaCompiler, TypeProvider, Logger> {
  handler: AsyncRouteHandler<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger, UpstreamResponse>
  /** A request performed before the handler runs; its response is the handler's third argument. */
  upstream: UpstreamOption<AsyncRouteRequest<RouteGeneric, RawServer, RawRequest, ContextConfig, NoInfer<SchemaCompiler>, TypeProvider, Logger>>
}

/** `app.asyncRoute`: generic like `app.route`, plus the introspection functions. */
export interface AsyncRouteDecorator<
  RawServer extends RawServerBase = RawServerDefault,
  RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
  RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
  Logger extends FastifyBaseLogger = FastifyBaseLogger,
  TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault
> {
  <RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault, const SchemaCompiler extends FastifySchema = FastifySchema>(
    options: AsyncRouteOptionsWithUpstream<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, SchemaCompiler, TypeProvider, Logger>
  ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  <RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault, const SchemaCompiler extends FastifySchema = FastifySchema>(
    options: AsyncRouteOptions<RouteGeneric, RawServer, RawRequest, RawReply, ContextConfig, SchemaCompiler, TypeProvider, Logger>
  ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  /** One entry per unfinished async reply. */
  pending (): PendingReply[]
  stats (): AsyncRouteStats
}

export interface AsyncRoutePluginOptions {
  /** Watchdog in ms for every async route; `0` turns it off. Default 30000. */
  timeout?: number
  /** Used by `fetch`, `pipe` and `upstream`. Default: an undici Agent the plugin creates and closes. */
  dispatcher?: AnyDispatcher
  /** On `app.close()`, ms to wait for pending replies before ending them. Default 10000. */
  closeGrace?: number
  /** Called when the watchdog fires, before the default action; may answer itself. */
  onTimeout?: (request: FastifyRequest, reply: AsyncReply, report: HangReport) => void
  /** ms; logs one warning for a settled, idle, unfinished reply. Default `false` (off). */
  warnUnfinished?: number | false
  /** Origins (`http://host:port`) that `fetch`, `pipe` and `upstream` may reach. Default: any. */
  allowedOrigins?: readonly string[]
  /** ms; a reply with no sign of life (write, flush, upstream head or chunk) for that long ends with 504. Default `0` (off). */
  idleTimeout?: number
  /** A header name; the reply's remaining watchdog time travels upstream in it, and an incoming one may shorten it. */
  deadlineHeader?: string
  /** At most this many open async replies; beyond, 503 `FST_ASYNC_ROUTE_OVERLOADED` at once. Default `0` (no limit). */
  maxPending?: number
  /** Default retry policy of every upstream request. Default `{ attempts: 1 }` (no retry). */
  retry?: RetryPolicy
  /**
   * Compresses the answers async routes write (hijacked replies skip `@fastify/compress`):
   * `true` for the defaults, or the options. Default `false`.
   */
  compress?: boolean | CompressOptions
  /**
   * Renders every error answer the plugin sends before the head (handler throw or `fail()`,
   * 504s, upstream 502/504, 500s, 400, 413, the close and `maxPending` 503s): set the status and
   * headers on `reply` and call `reply.finish(body)` before returning. If it throws or has not
   * finished, the default JSON answer is sent.
   */
  renderError?: RenderError
}

/** `renderError(error, request, reply)`: `error` carries `code` and `statusCode`. */
export type RenderError = (error: AsyncRouteError, request: FastifyRequest, reply: AsyncReply) => void

/** The `compress` option's fields. */
export interface CompressOptions {
  /** Bytes: a `finish()` body below it (or a relayed body whose `content-length` says so) goes as it is. Default 1024. */
  threshold?: number
  /** The encodings offered, in the server's order of preference among equals. Default `['br', 'gzip', 'deflate']`. */
  encodings?: ReadonlyArray<'br' | 'gzip' | 'deflate'>
  /** Brotli quality, 0 to 11. Default 4 (Node's 11 costs a busy server too much CPU). */
  brotliQuality?: number
  /** gzip and deflate level, 0 to 9. Default 6. */
  level?: number
}

/** The plugin; also its own `default` and `asyncRoute` properties, for every import form. */
export interface AsyncRoutePlugin extends FastifyPluginCallback<AsyncRoutePluginOptions> {
  default: AsyncRoutePlugin
  asyncRoute: AsyncRoutePlugin
}

// The type parameters must be those of Fastify's own declaration (types/instance.d.ts), names,
// constraints and defaults alike: TypeScript requires identical lists on every declaration.
declare module 'fastify' {
  interface FastifyInstance<
    RawServer extends RawServerBase = RawServerDefault,
    RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
    RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
    Logger extends FastifyBaseLogger = FastifyBaseLogger,
    TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault
  > {
    asyncRoute: AsyncRouteDecorator<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }
}
