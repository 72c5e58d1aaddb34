// What is checked before an upstream request starts, for `fetch`, `pipe(url)`, `forward` and
// the `upstream` option alike: the URL is an http(s) URL whose path cannot walk out of the
// prefix it was built on, the reply is still open, and the origin is allowed (checked before
// any connection is opened).
import { BadPathError, BadUpstreamRequestError, CancelledError, OriginDeniedError } from './errors.js'
import type { ReplyPort } from './reply-port.js'
import { hasDotSegment, safeUrl, splitUrl, type Target } from './target.js'
import { kEndReason, kOpen, kPlugin } from './symbols.js'

/**
 * Where a request for `url` goes, or the error it fails with: `BAD_UPSTREAM_REQUEST` for
 * anything that is not an http(s) URL (a relative path, a number, `file:`…), `BAD_PATH` for
 * a string whose path holds a dot segment.
 */
export function targetOf (url: unknown): Target | Error {
  let target: Target
  try {
    if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError(`not a URL: ${typeof url}`)
    target = splitUrl(url)
  } catch (error) {
    // (The reason, with the URL less its credentials, is for the logs; the client's answer
    // never names the upstream.)
    const reason = new TypeError(`invalid upstream URL ${printable(url)}: ${(error as Error).message}`)
    return new BadUpstreamRequestError({ cause: reason })
  }
  // (A URL split as it is was already seen to hold no dot segment: the per-request common case.)
  if (typeof url === 'string' && target.verbatim !== true && hasDotSegment(url)) return new BadPathError()
  return target
}

/**
 * Where a request of `reply` for `url` goes, or the error it must fail with before it starts:
 * the reply ended, the URL refused as such (checked before the origin), the origin not allowed.
 */
export function preflight (reply: ReplyPort, url: string | URL): Target | Error {
  const target = targetOf(url)
  if (!reply[kOpen]) return new CancelledError({ cause: reply[kEndReason] })
  if (target instanceof Error) return target
  const allowed = reply[kPlugin].allowedOrigins
  if (allowed !== null && !allowed.has(target.origin)) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return new OriginDeniedError()
  }
  return target
}

/** What the log may say of a value given as a URL: its text less credentials, or its type. */
function printable (url: unknown): string {
  let text: string
  try {
    text = String(url)
  } catch {
    // (An object whose conversion throws: `{ toString: 1 }` from a JSON body, say.)
    return `(${typeof url})`
  }
  return JSON.stringify(safeUrl(text).slice(0, 200))
}
