// What every upstream request of a reply goes through, whichever way its answer is delivered —
// as undici's Readable (`fetch`, fetch.ts) or streamed straight into the reply (`pipe(url)`,
// `forward`, pipe-direct.ts): the options it is dispatched with besides the caller's, and its
// retries (the checks before it starts are preflight.ts). The two kinds of call are
// two classes only because undici wants a different object from each (a signal for
// `request()`, a handler for `dispatch()`), and each call is that object itself, so that a
// request allocates nothing more.
import { refreshDeadline, withDeadline } from './deadline.js'
import type { ReplyPort } from './reply-port.js'
import { mayRetry, RetryState, type ResolvedRetry } from './retry-policy.js'
import type { PipeOptions, UpstreamRequest } from './types.js'
import type { DispatchOptions } from './undici-adapter.js'
import { kDeadline, kFailByPlugin, kPlugin } from './symbols.js'

/** A call as its retries see it. */
export interface RetriedCall {
  readonly reply: ReplyPort
  /** Set only for a request that may be retried. */
  readonly retry: RetryState<DispatchOptions> | null
  /** Sends the request (again, for a retry). */
  send (options: DispatchOptions): void
}

/**
 * What every request of a reply carries besides its caller's options: the reply's remaining
 * time in the deadline header (over the caller's `headers`), and no redirect followed when
 * `allowedOrigins` is set (it holds for every hop: the 3xx is the answer).
 */
export function addReplyOptions (reply: ReplyPort, options: DispatchOptions, headers: unknown): void {
  const plugin = reply[kPlugin]
  if (plugin.deadlineHeader !== null) {
    options.headers = withDeadline(plugin.deadlineHeader, reply[kDeadline], headers as DispatchOptions['headers']) as DispatchOptions['headers']
  } else if (headers !== undefined) {
    options.headers = headers as DispatchOptions['headers']
  }
  if (plugin.allowedOrigins !== null) options.maxRedirections = 0
}

/** The retry bookkeeping of a request under `policy`, or null when it cannot be retried (its method, or a body that cannot be sent again). */
export function retryStateFor (policy: ResolvedRetry, options: DispatchOptions): RetryState<DispatchOptions> | null {
  return mayRetry(policy, options.method, options.body) ? new RetryState(policy, options) : null
}

/** A next try is due in `delay` ms (from `errorDelay`/`statusDelay`; -1: none) and starts before the reply's watchdog fires. */
export function retryPlanned (call: RetriedCall, delay: number): boolean {
  return (call.retry as RetryState<DispatchOptions>).next(delay, call.reply[kDeadline]) >= 0
}

/** Waits until the planned try is due, still tracked as in flight, then sends it. */
export function waitForRetry (call: RetriedCall): void {
  const retry = call.retry as RetryState<DispatchOptions>
  retry.wait(Math.max(0, retry.due - Date.now()), sendAgain, call)
}

function sendAgain (call: RetriedCall): void {
  const retry = call.retry as RetryState<DispatchOptions>
  call.send(refreshDeadline(call.reply[kPlugin].deadlineHeader, call.reply[kDeadline], retry.options))
}

/** `{ url, ...options }` of `pipe(request)` and the `upstream` option, as a URL and its options. */
export function splitRequest (request: UpstreamRequest): [string | URL, PipeOptions] {
  const { url, ...options } = request
  return [url, options]
}

/** A pipe refused before anything was sent: the reply fails after the caller's synchronous code, as an awaited fetch would. */
export async function failLater (reply: ReplyPort, error: Error): Promise<void> {
  await undefined
  reply[kFailByPlugin](error)
}
