// Every error the plugin creates, with the stable codes of the public contract (how undici's
// errors become these: error-mapping.ts). Messages are what a client may see: they never name an upstream's URL, host or address (the undici error
// stays attached as `cause`, for the logs).
// The named import: the default one of this `export =` module loses its namespace (and so the
// error types) in the declarations under TypeScript's bundler resolution.
import { createError } from '@fastify/error'

export const TimeoutError = createError(
  'FST_ASYNC_ROUTE_TIMEOUT', 'The reply was not finished within %d ms', 504)

export const UpstreamError = createError(
  'FST_ASYNC_ROUTE_UPSTREAM_ERROR', 'The upstream request failed', 502)

/** A kind of `UpstreamError`: `instanceof UpstreamError` holds for both. */
export const UpstreamTimeoutError = createError(
  'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT', 'The upstream request timed out', 504, UpstreamError as unknown as ErrorConstructor)

/**
 * undici refused the request before connecting (a header, method or body it does not accept):
 * the caller's request is wrong, no upstream is to blame. undici's reason stays in `cause`.
 */
export const BadUpstreamRequestError = createError(
  'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST', 'The upstream request is invalid', 500)

/** `idleTimeout`: the reply showed no sign of life for that long. */
export const IdleTimeoutError = createError(
  'FST_ASYNC_ROUTE_IDLE_TIMEOUT', 'The reply showed no sign of life for %d ms', 504)

/** `maxPending`: too many open replies; answered at once, with `retry-after: 1`. */
export const OverloadedError = createError(
  'FST_ASYNC_ROUTE_OVERLOADED', 'Too many pending requests; retry shortly', 503)
/** `reply.forward()` to a path with a dot segment (`.`, `..`, also percent-encoded): refused before anything is sent. */
export const BadPathError = createError(
  'FST_ASYNC_ROUTE_BAD_PATH', 'The forwarded path is not allowed', 400)

/** `reply.forward(url, { bodyLimit })`: the streamed request body is larger than the limit. */
export const BodyTooLargeError = createError(
  'FST_ASYNC_ROUTE_BODY_TOO_LARGE', 'The request body is too large', 413)

/**
 * A `rewriteHeaders` of `pipe`/`forward` threw (or returned something other than an object):
 * the reply fails with 500 before anything is sent; what it threw is the `cause`.
 */
export const RewriteHeadersError = createError(
  'FST_ASYNC_ROUTE_REWRITE_HEADERS', 'The upstream response headers could not be rewritten', 500)

export const OriginDeniedError = createError(
  'FST_ASYNC_ROUTE_ORIGIN_DENIED', 'The upstream origin is not allowed', 500)

export const ClosingError = createError(
  'FST_ASYNC_ROUTE_CLOSING', 'The server is closing', 503)

/** What a `fetch` rejects with when its reply ended first; `cause` says how the reply ended. */
export const CancelledError = createError(
  'FST_ASYNC_ROUTE_CANCELLED', 'The reply ended before the upstream request completed', 500)

/** What `signal.reason` holds when the client left before the reply was finished. */
export const ClientGoneError = createError(
  'FST_ASYNC_ROUTE_CLIENT_GONE', 'The client closed the connection before the reply was finished', 499)

// Misuse of the API: coded `TypeError`s, as Node's own `ERR_INVALID_ARG_TYPE` (`name`
// 'TypeError', a stable `code`) and Fastify's `FST_ERR_*` are. The message says which option or
// argument, and what it must be.
type MisuseError = TypeError & { code: string, statusCode: number }
type MisuseErrorClass = new (message: string) => MisuseError

function misuse (code: string): MisuseErrorClass {
  const Base = createError(code, '%s', 500, TypeError) as unknown as MisuseErrorClass
  return class extends Base {
    constructor (message: string) {
      super(message)
      this.name = 'TypeError'
    }
  }
}

/** A plugin or route option is invalid (`register` rejects, `asyncRoute()` throws). */
export const InvalidOptionError = misuse('FST_ASYNC_ROUTE_INVALID_OPTION')

/** A method of the reply was called with an argument it does not take. */
export const InvalidArgumentError = misuse('FST_ASYNC_ROUTE_INVALID_ARGUMENT')

/** A value as a misuse message shows it: strings quoted (so that `"100"` and `100` differ), arrays item by item. */
export function showValue (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(showValue).join(', ')}]`
  try {
    return String(value)
  } catch {
    // (An object whose conversion throws: `{ toString: 1 }` from a JSON body, say.)
    return `(${typeof value})`
  }
}

/**
 * Every message about a wrong option or argument, in one shape: `<where> "<name>" must be
 * <expected>, got <value>`; thrown as `Misuse` (`InvalidOptionError` or `InvalidArgumentError`).
 */
export function mustBe (Misuse: MisuseErrorClass, where: string, name: string, expected: string, value: unknown): never {
  throw new Misuse(`${where} "${name}" must be ${expected}, got ${showValue(value)}`)
}
