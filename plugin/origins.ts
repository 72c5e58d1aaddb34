// What is checked before an upstream request starts, for `fetch` and `pipe(url)` alike: the
// reply is still open, and the origin is allowed (checked before any connection is opened).
import { CancelledError, OriginDeniedError } from './errors.js'
import type { AsyncReplyImpl } from './reply.js'
import { safeUrl } from './watchdog.js'

/** True when `url` parses and its origin is one of `allowed` (already normalised). */
export function originAllowed (allowed: ReadonlySet<string>, url: string | URL): boolean {
  try {
    return allowed.has(new URL(url).origin)
  } catch {
    return false
  }
}

/** The error a request for `url` must fail with before it starts, or null when it may start. */
export function refusal (reply: AsyncReplyImpl, url: string | URL): Error | null {
  if (!reply.open) return new CancelledError({ cause: reply.endReason })
  const allowed = reply.route.plugin.allowedOrigins
  if (allowed !== null && !originAllowed(allowed, url)) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return new OriginDeniedError()
  }
  return null
}
