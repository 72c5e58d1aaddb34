// What is checked before an upstream request starts, for `fetch` and `pipe(url)` alike: the
// reply is still open, and the origin is allowed (checked before any connection is opened).
import { toUpstreamError } from './error-mapping.js'
import { CancelledError, OriginDeniedError } from './errors.js'
import type { ReplyPort } from './reply-port.js'
import { safeUrl } from './report.js'
import { upstreamTarget, type Target } from './target.js'

/** Where a request for `url` goes, or the error it fails with when `url` is not a URL. */
export function targetOf (url: string | URL): Target | Error {
  try {
    return upstreamTarget(url)
  } catch (error) {
    return toUpstreamError(error)
  }
}

/**
 * The error a request for `url` must fail with before it starts, or null when it may start.
 * `target` is `targetOf(url)` (an unparsable URL is never an allowed origin).
 */
export function refusal (reply: ReplyPort, url: string | URL, target: Target | Error): Error | null {
  if (!reply.open) return new CancelledError({ cause: reply.endReason })
  const allowed = reply.plugin.allowedOrigins
  if (allowed !== null && (target instanceof Error || !allowed.has(target.origin))) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return new OriginDeniedError()
  }
  return null
}
