// `pipe(url)`: the request is dispatched with a handler that writes the upstream answer
// straight into the response — the fast path, at the speed of a bare Node forwarder.
import type { IncomingHttpHeaders } from 'node:http'
import { toUpstreamError } from './error-mapping.js'
import { CancelledError } from './errors.js'
import { preflight } from './preflight.js'
import type { ReplyPort, UpstreamCall } from './reply-port.js'
import { errorDelay, statusDelay, type ResolvedRetry, type RetryState } from './retry-policy.js'
import type { InflightState, PipeOptions, RewriteHeaders } from './types.js'
import { StreamingRequest, type Dispatcher, type DispatchOptions } from './undici-adapter.js'
import { addReplyOptions, failLater, retryPlanned, retryStateFor, waitForRetry, type RetriedCall } from './upstream-call.js'
import { kEndReason, kFailByPlugin, kPlugin, kRelayChunk, kRelayEnd, kRelayHead, kTrack, kUntrack } from './symbols.js'

/**
 * Request options the direct path passes to `dispatch` as they are (`dispatcher` is the
 * plugin's own, as for `fetch`). Anything else (a caller's `signal`, a streamed
 * body, `onInfo`, `responseHeaders`, …) takes the general path: `fetch` and then `pipe(res)`.
 */
const DIRECT_OPTIONS = new Set(['method', 'headers', 'body', 'query', 'headersTimeout', 'bodyTimeout', 'dispatcher', 'retry', 'rewriteHeaders'])

export function isDirect (options: PipeOptions | undefined): boolean {
  if (options === undefined) return true
  for (const key of Object.keys(options)) {
    if (!DIRECT_OPTIONS.has(key)) return false
  }
  const body = options.body
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array
}

/** What `body.dump()` reads of a body nobody wants before it gives up on the socket. */
const DISCARD_LIMIT = 128 * 1024

// States of a direct pipe.
const WAITING = 0 // request sent, no head yet
const STREAMING = 1 // head relayed, body going to the client
const DETACHED = 2 // the reply finished (HEAD, or finish() during pipe()): the rest is read and dropped
const DONE = 3 // complete, failed or cancelled
const DISCARDING = 4 // a retryable answer: read and dropped, then the next try
const BACKOFF = 5 // waiting for the next try (still tracked: in flight)

/**
 * `reply.pipe(url)`: one undici dispatch whose handler relays the head and writes each chunk
 * straight into the Node response, pausing the upstream while the client's socket is full.
 * No Readable, no AbortController, no promise per step: the ceiling of a bare Node forwarder.
 */
class DirectPipe extends StreamingRequest implements UpstreamCall, RetriedCall {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: ReplyPort
  readonly #resolve: () => void
  readonly #rewrite: RewriteHeaders | null
  #state = WAITING
  /** Set when the reply ended the request: its error is expected, not reported. */
  #cancelled = false
  /** Errors that undici reports synchronously, from inside `dispatch`, are reported a tick later. */
  #dispatching = true
  #discarded = 0
  retry: RetryState<DispatchOptions> | null = null

  constructor (reply: ReplyPort, method: string, url: string | URL, resolve: () => void, rewrite: RewriteHeaders | null) {
    super()
    this.reply = reply
    this.method = method
    this.url = url
    this.#resolve = resolve
    this.#rewrite = rewrite
  }

  /** For the hang report, worked out from the pipe's own state when a report is built. */
  get state (): InflightState {
    const state = this.#state
    if (state === WAITING) return this.started ? 'sent' : 'queued'
    if (state === BACKOFF) return 'retry-wait'
    // STREAMING, DETACHED, DISCARDING: a head arrived, its body is being read. (A DONE pipe is
    // untracked: never reported.)
    return 'receiving'
  }

  release (abnormal: boolean): void {
    // (Never called once done: #done untracks the pipe.)
    if (this.#state === BACKOFF) {
      (this.retry as RetryState<DispatchOptions>).cancelWait()
      this.#done()
      // As a request cancelled before its head: a late error, at debug level.
      if (abnormal) this.reply[kFailByPlugin](new CancelledError({ cause: this.reply[kEndReason] }))
      return
    }
    if (!abnormal && this.#state !== WAITING) {
      // finish() while piping (or a HEAD answered): stop feeding the ended response, read the
      // rest for the pool, as body.dump() would.
      this.#state = DETACHED
      return
    }
    this.#stop()
  }

  protected received (statusCode: number, headers: IncomingHttpHeaders): void {
    const retry = this.retry
    if (retry !== null && retryPlanned(this, statusDelay(retry.policy, retry.tries, statusCode, headers['retry-after']))) {
      // Retried: nothing of this answer reaches the client. Read it for the pool, then try again.
      this.#state = DISCARDING
      this.#discarded = 0
      return
    }
    // Until the head is relayed, nothing of the body is wanted: a HEAD answered or a head
    // refused (502) leaves the rest to be read and dropped.
    this.#state = DETACHED
    if (this.reply[kRelayHead](statusCode, headers, this.#rewrite)) this.#state = STREAMING
  }

  protected chunk (chunk: Buffer): boolean {
    if (this.#state !== STREAMING) {
      this.#discarded += chunk.length
      if (this.#discarded > DISCARD_LIMIT) {
        // A large answer to a try that is retried: give up its connection, not the request.
        if (this.#state === DISCARDING) this.abandon()
        else this.#stop()
      }
      return true
    }
    // Backpressure: the reply calls resume() once the client's socket drained. (No closure per
    // pipe for it: one more object per request, tied to the pipe, cost 20% of this path's CPU.)
    return this.reply[kRelayChunk](chunk, this)
  }

  protected completed (): void {
    if (this.#state === DISCARDING) return this.#backOff()
    const streaming = this.#state === STREAMING
    this.#done()
    if (streaming) this.reply[kRelayEnd]()
  }

  protected failed (error: Error): void {
    if (this.#dispatching) {
      queueMicrotask(() => this.failed(error))
      return
    }
    const state = this.#state
    if (state === DONE) return
    if (!this.#cancelled) {
      // The answer of a retried try broke while being dropped: the next try is due all the same.
      if (state === DISCARDING) return this.#backOff()
      const retry = this.retry
      if (state === WAITING && retry !== null && retryPlanned(this, errorDelay(retry.policy, retry.tries, error))) {
        return this.#backOff()
      }
    }
    this.#done()
    if (state === DETACHED) return
    if (this.#cancelled) {
      // Cancelled before the head because the reply ended: like the fetch that pipe(res) would
      // have made, this is a late error, logged at debug level by failByPlugin.
      if (state === WAITING) this.reply[kFailByPlugin](new CancelledError({ cause: this.reply[kEndReason] }))
      return
    }
    // Before the head: the contract's 502/504. After it: the client connection is cut.
    this.reply[kFailByPlugin](state === WAITING ? toUpstreamError(error) : error)
  }

  send (options: DispatchOptions): void {
    this.#state = WAITING
    this.#dispatching = true
    this.dispatchOn(this.reply[kPlugin].dispatcher, options)
    this.#dispatching = false
  }

  /** Waits until the next try is due, still tracked as in flight. */
  #backOff (): void {
    this.#state = BACKOFF
    waitForRetry(this)
  }

  #stop (): void {
    this.#cancelled = true
    this.cancel()
  }

  /** undici reports exactly one of the end and an error. */
  #done (): void {
    this.#state = DONE
    this.reply[kUntrack](this)
    this.#resolve()
  }
}

export function pipeDirect (reply: ReplyPort, url: string | URL, options: PipeOptions | undefined, policy: ResolvedRetry): Promise<void> {
  const target = preflight(reply, url)
  if (target instanceof Error) return failLater(reply, target)
  const method = options?.method ?? 'GET'
  let resolve!: () => void
  const done = new Promise<void>((_resolve) => { resolve = _resolve })
  const pipe = new DirectPipe(reply, method, url, resolve, options?.rewriteHeaders ?? null)
  reply[kTrack](pipe)
  // A literal of one shape (not a spread): undici reads a dozen options off it per request.
  const dispatchOptions: DispatchOptions = { origin: target.origin, path: target.path, method: method as Dispatcher.HttpMethod }
  addReplyOptions(reply, dispatchOptions, options?.headers)
  if (options !== undefined) {
    if (options.body !== undefined) dispatchOptions.body = options.body
    if (options.query !== undefined) dispatchOptions.query = options.query
    if (options.headersTimeout !== undefined) dispatchOptions.headersTimeout = options.headersTimeout
    if (options.bodyTimeout !== undefined) dispatchOptions.bodyTimeout = options.bodyTimeout
  }
  if (policy.attempts > 1) pipe.retry = retryStateFor(policy, dispatchOptions)
  pipe.send(dispatchOptions)
  return done
}
