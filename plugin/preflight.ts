// What is checked before an upstream request starts, for `fetch` and `pipe(url)` alike: the
// reply is still open, and the origin is allowed (checked before any connection is opened).
import { CancelledError, OriginDeniedError } from './errors.js'
import type { ReplyPort } from './reply-port.js'
import { safeUrl } from './report.js'
import type { Target } from './target.js'

/**
 * The error a request for `url` must fail with before it starts, or null when it may start.
 * `target` is `url` parsed (null if it does not parse: never an allowed origin).
 */
export function refusal (reply: ReplyPort, url: string | URL, target: Target | null): Error | null {
  if (!reply.open) return new CancelledError({ cause: reply.endReason })
  const allowed = reply.plugin.allowedOrigins
  if (allowed !== null && (target === null || !allowed.has(target.origin))) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return new OriginDeniedError()
  }
  return null
}
