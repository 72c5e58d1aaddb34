// Upstream requests through undici: `fetch` bound to its reply, and `pipe` of an upstream
// response with backpressure (`pipe(url)` has its own fast path in pipe-direct.ts).
import type { Readable } from 'node:stream'
import { toUpstreamError } from './error-mapping.js'
import { CancelledError, InvalidArgumentError } from './errors.js'
import { refusal, targetOf } from './preflight.js'
import type { Target } from './target.js'
import { isDirect, pipeDirect } from './pipe-direct.js'
import type { ReplyPort } from './reply-port.js'
import type { UpstreamCall } from './report.js'
import { callPolicy, errorDelay, mayRetry, RetryState, statusDelay, type ResolvedRetry } from './retry-policy.js'
import type { AsyncRouteError, FetchCallback, FetchOptions, InflightState, PipeOptions, RewriteHeaders, UpstreamRequest, UpstreamResponse } from './types.js'
import { refreshDeadline, withDeadline } from './deadline.js'
import { RequestSignal, sendRequest, type DispatchOptions } from './undici-adapter.js'
import { kDeadline, kEndReason, kFailByPlugin, kNoteSignOfLife, kOpen, kPlugin, kRelayChunk, kRelayEnd, kRelayHead, kRetry, kTrack, kUntrack, kWatchesIdle } from './symbols.js'

const CANCELLED_CODE = new CancelledError().code

const kCall = Symbol('fastify-async-route.call')
type TrackedBody = Readable & { [kCall]?: FetchCall }
/** A body that `pipe()` relays: the reply it feeds and the resolution of `pipe()`'s promise. */
const kPiped = Symbol('fastify-async-route.piped')
type PipedBody = TrackedBody & { [kPiped]: { reply: ReplyPort, resolve: () => void } }

function noop (): void {}

/**
 * One upstream request of a reply, from the call until its body was read or released. It is
 * also the `signal` undici gets (see RequestSignal), which costs far less than an
 * `AbortController` per request.
 */
export class FetchCall extends RequestSignal implements UpstreamCall {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: ReplyPort
  body: TrackedBody | null = null
  cancelled = false
  /** The fetch's promise, and how to settle it. */
  promise: Promise<UpstreamResponse> | null = null
  resolve: (response: UpstreamResponse) => void = noop
  reject: (error: unknown) => void = noop
  /** The caller's own `signal` (fetch options), when one was given. */
  callerSignal: AbortSignal | null = null
  /** Set only for a request that may be retried. */
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
        this.done()
        this.#fail(null)
        return
      }
      this.abortRequest()
    } else if (abnormal) {
      body.destroy()
    } else if (!body.readableEnded) {
      // A body still being piped must stop feeding the response that was just ended
      // (finish() during pipe()): its next chunk would be a write after end.
      body.removeListener('data', onPipedData)
      // Read what is left so the keep-alive socket goes back to the pool.
      const rest = body as unknown as UpstreamResponse['body']
      rest.dump().catch(noop)
    }
  }

  /** The caller's signal aborted: stop this request only; the reply is untouched. */
  handleEvent (): void {
    const reason = (this.callerSignal as AbortSignal).reason
    if (this.retry?.cancelWait() === true) {
      this.done()
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
    this.done()
    this.#fail(error)
  }

  /** Sends the request (again, for a retry). */
  send (options: DispatchOptions): void {
    sendRequest(this.reply[kPlugin].dispatcher, options, (error, response) => this.onResponse(error, response))
  }

  /** Waits `delay` ms (if a next try may be made) and tries again; false when no try is left. */
  #retryAfter (delay: number): boolean {
    const retry = this.retry as RetryState<DispatchOptions>
    if (this.cancelled || this.callerSignal?.aborted === true || retry.next(delay, this.reply[kDeadline]) < 0) return false
    retry.wait(delay, retryFetch, this)
    return true
  }

  #accept (response: UpstreamResponse): void {
    const body = response.body as TrackedBody
    if (this.cancelled || this.callerSignal?.aborted === true) {
      // The reply ended (or the caller gave up) after the head arrived but before this ran:
      // a cancelled fetch never yields a response.
      body.on('error', noop).destroy()
      this.done()
      this.#fail(null)
      return
    }
    const retry = this.retry
    if (retry !== null && this.#retryAfter(statusDelay(retry.policy, retry.tries, response.statusCode, response.headers['retry-after']))) {
      // Nothing of this answer reaches the caller: read it for the pool, and try again.
      body.on('error', noop)
      ;(body as unknown as UpstreamResponse['body']).dump().catch(noop)
      return
    }
    this.body = body
    body[kCall] = this
    body.on('close', onBodyClose)
    // idleTimeout: each chunk undici hands the body is a sign of life, whoever reads it (a
    // 'data' listener here would start the flow the handler controls).
    if (this.reply[kWatchesIdle]) body.push = pushNotingLife
    // Errors of a body nobody reads must not crash the process; readers still see them.
    body.on('error', noop)
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

  done (): void {
    this.callerSignal?.removeEventListener('abort', this)
    this.reply[kUntrack](this)
  }
}

function pushNotingLife (this: TrackedBody, chunk: unknown, encoding?: BufferEncoding): boolean {
  this[kCall]?.reply[kNoteSignOfLife]()
  return Object.getPrototypeOf(this).push.call(this, chunk, encoding)
}

function retryFetch (call: FetchCall): void {
  const retry = call.retry as RetryState<DispatchOptions>
  call.send(refreshDeadline(call.reply[kPlugin].deadlineHeader, call.reply[kDeadline], retry.options))
}

function onBodyClose (this: TrackedBody & Partial<PipedBody>): void {
  this[kCall]?.done()
  // A body that pipe() relayed: its promise resolves.
  this[kPiped]?.resolve()
}

/** `reply.fetch()`: a request through the plugin's dispatcher, bound to the reply. */
export function fetchUpstream (
  reply: ReplyPort,
  url: string | URL,
  options: FetchOptions | undefined,
  policy: ResolvedRetry = callPolicy(reply[kRetry], options?.retry, 'reply.fetch()')
): Promise<UpstreamResponse> {
  const target = targetOf(url)
  const refused = refusal(reply, url, target)
  if (refused !== null) return rejected(refused)
  const callerSignal = options?.signal ?? null
  if (callerSignal?.aborted === true) return Promise.reject(callerSignal.reason)
  const { origin, path } = target as Target
  const method = options?.method ?? 'GET'
  const call = new FetchCall(reply, method, url)
  reply[kTrack](call)
  // A literal of one shape when there are no options: undici reads a dozen options off it.
  const dispatchOptions: DispatchOptions = options === undefined
    ? { origin, path, method: method as DispatchOptions['method'], signal: call }
    : { ...options as object, origin, path, method: method as DispatchOptions['method'], signal: call }
  const deadlineHeader = reply[kPlugin].deadlineHeader
  if (deadlineHeader !== null) dispatchOptions.headers = withDeadline(deadlineHeader, reply[kDeadline], options?.headers) as DispatchOptions['headers']
  // allowedOrigins holds for every hop: no redirect is followed (a composed redirect
  // interceptor included); the 3xx is what fetch returns.
  if (reply[kPlugin].allowedOrigins !== null) dispatchOptions.maxRedirections = 0
  // (Not `delete`: that would turn the options into a slow dictionary-mode object.)
  if (options?.retry !== undefined) dispatchOptions.retry = undefined
  if (policy.attempts > 1 && mayRetry(policy, method, options?.body)) call.retry = new RetryState(policy, dispatchOptions)
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

/** A fetch callback that only takes the error (see the `fetch` overloads in types.ts). */
export type ErrorFirstCallback = (err: AsyncRouteError | null) => unknown

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

export function isPromise (value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

function isResponse (source: unknown): source is UpstreamResponse {
  return typeof (source as UpstreamResponse).statusCode === 'number' && typeof (source as UpstreamResponse).body === 'object'
}

/** `reply.pipe()`: status, headers and body of an upstream response, with backpressure. */
export function pipeUpstream (reply: ReplyPort, source: UpstreamResponse | string | URL | UpstreamRequest, options: PipeOptions | undefined): Promise<void> {
  // A bad `retry` or `rewriteHeaders` is a programming error: thrown now, not a failed pipe.
  if (typeof source === 'string' || source instanceof URL || source === null || typeof source !== 'object') {
    // (Anything that is not an object is refused as a URL would be: 500 BAD_UPSTREAM_REQUEST.)
    checkRewrite(options?.rewriteHeaders, 'reply.pipe()')
    return pipeRequest(reply, source as string | URL, options, callPolicy(reply[kRetry], options?.retry, 'reply.pipe()'))
  }
  if (isResponse(source)) return streamResponse(reply, source, checkRewrite(options?.rewriteHeaders, 'reply.pipe()'))
  const [url, requestOptions] = splitRequest(source)
  checkRewrite(requestOptions.rewriteHeaders, 'reply.pipe()')
  return pipeRequest(reply, url, requestOptions, callPolicy(reply[kRetry], requestOptions.retry, 'reply.pipe()'))
}

/** A `rewriteHeaders` option, checked: a function, or null when none was given. */
export function checkRewrite (rewrite: unknown, what: string): RewriteHeaders | null {
  if (rewrite === undefined) return null
  if (typeof rewrite !== 'function') throw new InvalidArgumentError(`${what}: "rewriteHeaders" must be a function, got ${typeof rewrite}`)
  return rewrite as RewriteHeaders
}

/**
 * `pipe(url)` and `forward`: the direct path when undici's `dispatch` takes the options as they
 * are. (`options.rewriteHeaders` was checked by the caller.)
 */
export function pipeRequest (reply: ReplyPort, url: string | URL, options: PipeOptions | undefined, policy: ResolvedRetry): Promise<void> {
  return isDirect(options) ? pipeDirect(reply, url, options, policy) : pipeFetched(reply, url, options as PipeOptions, policy)
}

/** `pipe(url)` with options only `request()` understands: `fetch`, then `pipe(res)`. */
async function pipeFetched (reply: ReplyPort, url: string | URL, options: PipeOptions, policy: ResolvedRetry): Promise<void> {
  const { rewriteHeaders, ...fetchOptions } = options
  let response: UpstreamResponse
  try {
    response = await fetchUpstream(reply, url, fetchOptions, policy)
  } catch (error) {
    reply[kFailByPlugin](error)
    return
  }
  return await streamResponse(reply, response, rewriteHeaders ?? null)
}

export function splitRequest (request: UpstreamRequest): [string | URL, PipeOptions] {
  const { url, ...options } = request
  return [url, options]
}

function streamResponse (reply: ReplyPort, response: UpstreamResponse, rewrite: RewriteHeaders | null): Promise<void> {
  const body = response.body
  if (!reply[kOpen]) {
    body.destroy()
    return Promise.resolve()
  }
  if (body.destroyed || body.readableEnded) {
    // Nothing more will come from this body (its upstream failed before pipe() was called, or
    // it was already read): none of the events below would fire, and the reply would hang.
    reply[kFailByPlugin](body.errored ?? new Error('reply.pipe(): the upstream response body was already read or destroyed'))
    return Promise.resolve()
  }
  if (!reply[kRelayHead](response.statusCode, response.headers, rewrite)) {
    // A HEAD answered, or a head refused (502): the rest is read for the pool.
    body.dump().catch(noop)
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    // What `body.pipe(raw)` would do, with one shared listener per event instead of a pipe's
    // closures and listeners on both streams.
    const piped = body as unknown as PipedBody
    piped[kPiped] = { reply, resolve }
    // ('end', 'error' and 'close' come at most once: `on` spares `once`'s wrappers. A body from
    // reply.fetch() already has onBodyClose, which resolves the pipe too.)
    piped.on('data', onPipedData)
    piped.on('end', onPipedEnd)
    // An upstream error mid-body cuts the client connection: a clean end would pass a
    // truncated body off as complete.
    piped.on('error', onPipedError)
    if (piped[kCall] === undefined) piped.on('close', onBodyClose)
  })
}

function onPipedData (this: PipedBody, chunk: Buffer): void {
  const piped = this[kPiped]
  // Backpressure: paused until the client's socket drained.
  if (!piped.reply[kRelayChunk](chunk, this)) this.pause()
}

function onPipedEnd (this: PipedBody): void {
  this[kPiped].reply[kRelayEnd]()
}

function onPipedError (this: PipedBody, error: Error): void {
  this[kPiped].reply[kFailByPlugin](error)
}
