// `reply.fetch()`: an upstream request through undici's `request()`, bound to its reply; the
// answer is undici's response, its body a Readable the handler reads (or `pipe(res)` relays).
import { toUpstreamError } from './error-mapping.js'
import { CancelledError } from './errors.js'
import { preflight } from './preflight.js'
import type { ReplyPort, UpstreamCall } from './reply-port.js'
import { callPolicy, errorDelay, statusDelay, type ResolvedRetry, type RetryState } from './retry-policy.js'
import type { ErrorFirstCallback, FetchCallback, FetchOptions, InflightState, UpstreamResponse } from './types.js'
import { addReplyOptions, retryPlanned, retryStateFor, waitForRetry, type RetriedCall } from './upstream-call.js'
import { adoptBody, discardBody, RequestSignal, sendRequest, type BodyOwner, type DispatchOptions, type ResponseBody } from './undici-adapter.js'
import { isPromise } from './user-code.js'
import { kEndReason, kFailByPlugin, kNoteSignOfLife, kPlugin, kRetry, kTrack, kUntrack, kWatchesIdle } from './symbols.js'

const CANCELLED_CODE = new CancelledError().code

function noop (): void {}

/**
 * One `fetch` of a reply, from the call until its body was read or released. It is also the
 * `signal` undici gets (see RequestSignal), which costs far less than an `AbortController`
 * per request.
 */
class FetchCall extends RequestSignal implements UpstreamCall, RetriedCall, BodyOwner {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: ReplyPort
  body: ResponseBody | null = null
  /** The reply ended the request. */
  cancelled = false
  /** The fetch's promise, and how to settle it. */
  promise: Promise<UpstreamResponse> | null = null
  resolve: (response: UpstreamResponse) => void = noop
  reject: (error: unknown) => void = noop
  /** The caller's own `signal` (fetch options), when one was given. */
  callerSignal: AbortSignal | null = null
  retry: RetryState<DispatchOptions> | null = null

  constructor (reply: ReplyPort, method: string, url: string | URL) {
    super()
    this.reply = reply
    this.method = method
    this.url = url
  }

  /**
   * For the hang report. undici's `request()` does not tell when the request is written, so
   * before its head arrives a fetch claims no state (neither queued nor sent), except between
   * tries.
   */
  get state (): InflightState | undefined {
    const retry = this.retry
    if (retry !== null && retry.timer !== null) return 'retry-wait'
    return this.body === null ? undefined : 'receiving'
  }

  /** The reply ended: cancel the request, or release its body so the socket is not leaked. */
  release (abnormal: boolean): void {
    const body = this.body
    if (body === null) {
      this.cancelled = true
      if (this.retry?.cancelWait() === true) {
        // Waiting for its next try: nothing is in flight to abort.
        this.#done()
        this.#fail(null)
        return
      }
      this.abortRequest()
    } else if (abnormal) {
      body.destroy()
    } else if (!body.readableEnded) {
      // finish() while the body is still coming (being piped, say): read the rest for the pool.
      // (What is piped of it after the response ended is dropped by the reply.)
      discardBody(body)
    }
  }

  /** The caller's signal aborted: stop this request only; the reply is untouched. */
  handleEvent (): void {
    const reason = (this.callerSignal as AbortSignal).reason
    if (this.retry?.cancelWait() === true) {
      this.#done()
      this.#fail(null)
    } else if (this.body === null) {
      this.abortRequest()
    } else {
      this.body.destroy(reason)
    }
  }

  /** undici's callback: the head arrived, or the request failed. */
  onResponse (error: Error | null, response: UpstreamResponse | undefined): void {
    if (error === null) {
      if (this.reply[kWatchesIdle]) this.reply[kNoteSignOfLife]()
      // undici calls back from inside its handler: what comes after it (a dispatcher's own
      // hooks) runs before the response is taken, as with an awaited promise.
      queueMicrotask(() => this.#accept(response as UpstreamResponse))
      return
    }
    if (this.retry !== null && this.#retryAfter(errorDelay(this.retry.policy, this.retry.tries, error))) return
    this.#done()
    this.#fail(error)
  }

  send (options: DispatchOptions): void {
    sendRequest(this.reply[kPlugin].dispatcher, options, (error, response) => this.onResponse(error, response))
  }

  bodyChunk (): void {
    this.reply[kNoteSignOfLife]()
  }

  bodyClosed (): void {
    this.#done()
  }

  /** Tries again after `delay` ms if a next try may be made; false when it may not. */
  #retryAfter (delay: number): boolean {
    if (this.cancelled || this.callerSignal?.aborted === true || !retryPlanned(this, delay)) return false
    waitForRetry(this)
    return true
  }

  #accept (response: UpstreamResponse): void {
    const body = response.body
    if (this.cancelled || this.callerSignal?.aborted === true) {
      // The reply ended (or the caller gave up) after the head arrived but before this ran:
      // a cancelled fetch never yields a response.
      body.on('error', noop).destroy()
      this.#done()
      this.#fail(null)
      return
    }
    const retry = this.retry
    if (retry !== null && this.#retryAfter(statusDelay(retry.policy, retry.tries, response.statusCode, response.headers['retry-after']))) {
      // Nothing of this answer reaches the caller: read it for the pool, and try again.
      discardBody(body)
      return
    }
    this.body = body
    // idleTimeout: each chunk undici hands the body is a sign of life.
    adoptBody(body, this, this.reply[kWatchesIdle])
    this.resolve(response)
  }

  #fail (error: Error | null): void {
    if (this.callerSignal?.aborted === true) {
      this.reject(this.callerSignal.reason)
    } else if (this.cancelled) {
      // Rejected only because the reply ended: never an unhandled rejection (a handler that
      // fired and forgot this fetch must not crash the process); awaiting it still throws.
      this.promise?.catch(noop)
      this.reject(new CancelledError({ cause: this.reply[kEndReason] }))
    } else {
      this.reject(toUpstreamError(error))
    }
  }

  #done (): void {
    this.callerSignal?.removeEventListener('abort', this)
    this.reply[kUntrack](this)
  }
}

/** `reply.fetch()`: a request through the plugin's dispatcher, bound to the reply. */
export function fetchUpstream (
  reply: ReplyPort,
  url: string | URL,
  options: FetchOptions | undefined,
  policy: ResolvedRetry = callPolicy(reply[kRetry], options?.retry, 'reply.fetch()')
): Promise<UpstreamResponse> {
  const target = preflight(reply, url)
  if (target instanceof Error) return rejected(target)
  const callerSignal = options?.signal ?? null
  if (callerSignal?.aborted === true) return Promise.reject(callerSignal.reason)
  const method = options?.method ?? 'GET'
  const call = new FetchCall(reply, method, url)
  reply[kTrack](call)
  const { origin, path } = target
  // A literal of one shape when there are no options: undici reads a dozen options off it.
  const dispatchOptions: DispatchOptions = options === undefined
    ? { origin, path, method: method as DispatchOptions['method'], signal: call }
    : { ...options as object, origin, path, method: method as DispatchOptions['method'], signal: call }
  addReplyOptions(reply, dispatchOptions, options?.headers)
  // (Not `delete`: that would turn the options into a slow dictionary-mode object.)
  if (options?.retry !== undefined) dispatchOptions.retry = undefined
  if (policy.attempts > 1) call.retry = retryStateFor(policy, dispatchOptions)
  if (callerSignal !== null) {
    call.callerSignal = callerSignal
    // The call is its own listener (handleEvent): no closure per request.
    callerSignal.addEventListener('abort', call)
  }
  const promise = new Promise<UpstreamResponse>((resolve, reject) => {
    call.resolve = resolve
    call.reject = reject
  })
  call.promise = promise
  call.send(dispatchOptions)
  return promise
}

/** A rejected promise; one that only says "your reply ended" is marked handled. */
function rejected (error: Error): Promise<never> {
  const promise = Promise.reject(error)
  if ((error as { code?: unknown }).code === CANCELLED_CODE) promise.catch(noop)
  return promise
}

/** `reply.fetch(url, options, callback)`: a throw (or a rejected promise) of the callback fails the reply. */
export function fetchWithCallback (reply: ReplyPort, url: string | URL, options: FetchOptions | undefined, callback: FetchCallback | ErrorFirstCallback): void {
  const call = callback as (error: Error | null, res: UpstreamResponse | undefined) => unknown
  const run = (error: Error | null, res: UpstreamResponse | undefined): void => {
    try {
      const result = call(error, res)
      if (isPromise(result)) result.then(undefined, (thrown: unknown) => reply[kFailByPlugin](thrown))
    } catch (thrown) {
      reply[kFailByPlugin](thrown)
    }
  }
  fetchUpstream(reply, url, options).then((res) => run(null, res), (error: Error) => run(error, undefined))
}
