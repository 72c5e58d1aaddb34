// How errors from undici and the sockets it uses become the contract's errors: 502, 504, or
// 500 for a request undici refused before connecting. The plugin's own errors pass as they are.
import { BadUpstreamRequestError, UpstreamError, UpstreamTimeoutError } from './errors.js'

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

// Socket errors undici passes through as they are when a connection breaks mid-body.
const NETWORK_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN'])

const OWN_CODE_PREFIX = 'FST_ASYNC_ROUTE_'

export function codeOf (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Maps anything undici threw to the contract's 502, 504 or 500; the plugin's own errors pass. */
export function toUpstreamError (error: unknown): Error {
  const code = codeOf(error)
  if (code?.startsWith(OWN_CODE_PREFIX) === true) return error as Error
  if (code !== undefined && REFUSED_CODES.has(code)) return new BadUpstreamRequestError({ cause: error })
  return code !== undefined && TIMEOUT_CODES.has(code)
    ? new UpstreamTimeoutError({ cause: error })
    : new UpstreamError({ cause: error })
}

/**
 * True for errors that come from talking to an upstream: undici's own, and the socket errors
 * it passes through. They may surface while a body is read, after `fetch` resolved.
 */
export function isUpstreamFailure (error: unknown): boolean {
  const code = codeOf(error)
  return code !== undefined && (code.startsWith('UND_ERR_') || NETWORK_CODES.has(code))
}
