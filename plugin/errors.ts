// Every error the plugin creates, with the stable codes of the public contract. Messages are
// what a client may see: they never name an upstream's URL, host or address (the undici error
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

// undici's own codes (and the system ones it passes through) that mean "too slow" rather
// than "broken".
const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT'
])

// undici's codes for a request it refuses before anything is sent.
const REFUSED_CODES = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED'])

const OWN_CODE_PREFIX = 'FST_ASYNC_ROUTE_'

function codeOf (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Maps anything undici threw to the contract's 502 or 504; the plugin's own errors pass. */
export function toUpstreamError (error: unknown): Error {
  const code = codeOf(error)
  if (code?.startsWith(OWN_CODE_PREFIX) === true) return error as Error
  if (code !== undefined && REFUSED_CODES.has(code)) return new BadUpstreamRequestError({ cause: error })
  return code !== undefined && TIMEOUT_CODES.has(code)
    ? new UpstreamTimeoutError({ cause: error })
    : new UpstreamError({ cause: error })
}

// Socket errors undici passes through as they are when a connection breaks mid-body.
const NETWORK_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN'])

/**
 * True for errors that come from talking to an upstream: undici's own, and the socket errors
 * it passes through. They may surface while a body is read, after `fetch` resolved.
 */
export function isUpstreamFailure (error: unknown): boolean {
  const code = codeOf(error)
  return code !== undefined && (code.startsWith('UND_ERR_') || NETWORK_CODES.has(code))
}
