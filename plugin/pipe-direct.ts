// `pipe(url)`: the request is dispatched with a handler that writes the upstream answer
// straight into the response — the fast path, at the speed of a bare Node forwarder.
import { Dispatcher } from 'undici'
import { CancelledError, toUpstreamError, UpstreamError } from './errors.js'
import { forwardableRawHeaders } from './headers.js'
import { pathOf, refusal } from './origins.js'
import type { AsyncReplyImpl } from './reply.js'
import type { FetchOptions } from './types.js'
import type { Releasable } from './watchdog.js'

/**
 * Request options the direct path passes to `dispatch` as they are (`signal` and `dispatcher`
 * are the plugin's own, as for `fetch`). Anything else (a streamed body, `onInfo`,
 * `responseHeaders`, …) takes the general path: `fetch` and then `pipe(res)`.
 */
const DIRECT_OPTIONS = new Set(['method', 'headers', 'body', 'query', 'headersTimeout', 'bodyTimeout', 'signal', 'dispatcher'])

export function isDirect (options: FetchOptions | undefined): boolean {
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

/**
 * `reply.pipe(url)`: one undici dispatch whose handler relays the head and writes each chunk
 * straight into the Node response, pausing the upstream while the client's socket is full.
 * No Readable, no AbortController, no promise per step: the ceiling of a bare Node forwarder.
 */
class DirectPipe implements Releasable, Dispatcher.DispatchHandler {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: AsyncReplyImpl
  readonly #resolve: () => void
  #state = WAITING
  #abort: ((error?: Error) => void) | null = null
  #resume: (() => void) | null = null
  /** Set when the reply ended the request: its error is expected, not reported. */
  #cancelled = false
  /** Errors that undici reports synchronously, from inside `dispatch`, are reported a tick later. */
  #dispatching = true
  #discarded = 0

  constructor (reply: AsyncReplyImpl, method: string, url: string | URL, resolve: () => void) {
    this.reply = reply
    this.method = method
    this.url = url
    this.#resolve = resolve
  }

  release (abnormal: boolean): void {
    // (Never called once done: #done takes the pipe out of the reply's inflight set.)
    if (!abnormal && this.#state !== WAITING) {
      // finish() while piping (or a HEAD answered): stop feeding the ended response, read the
      // rest for the pool, as body.dump() would.
      this.#state = DETACHED
      return
    }
    this.#cancel()
  }

  onConnect (abort: (error?: Error) => void): void {
    if (this.#cancelled) {
      abort()
      return
    }
    this.#abort = abort
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx informational answers are not relayed (request()'s default, without `onInfo`).
    if (statusCode < 200) return true
    const reply = this.reply
    const raw = reply.raw
    if (!raw.headersSent) {
      try {
        reply.writeUpstreamHead(statusCode, forwardableRawHeaders(rawHeaders))
      } catch (error) {
        // Same as pipe(res): an upstream head Node refuses to relay is a bad upstream response.
        for (const name of raw.getHeaderNames()) raw.removeHeader(name)
        this.#state = DETACHED
        reply.failByPlugin(new UpstreamError({ cause: error }))
        return false
      }
    }
    if (reply.request.method === 'HEAD') {
      this.#state = DETACHED
      reply.finishPiped()
      return true
    }
    this.#state = STREAMING
    this.#resume = resume
    return true
  }

  onData (chunk: Buffer): boolean {
    if (this.#state !== STREAMING) {
      this.#discarded += chunk.length
      if (this.#discarded > DISCARD_LIMIT) this.#cancel()
      return true
    }
    const reply = this.reply
    reply.bytesWritten += chunk.length
    if (reply.raw.write(chunk)) return true
    reply.raw.once('drain', this.#resume as () => void)
    return false
  }

  onComplete (): void {
    const streaming = this.#state === STREAMING
    this.#done()
    if (streaming) this.reply.finishPiped()
  }

  onError (error: Error): void {
    if (this.#dispatching) {
      queueMicrotask(() => this.onError(error))
      return
    }
    const state = this.#state
    this.#done()
    if (state === DETACHED) return
    if (this.#cancelled) {
      // Cancelled before the head because the reply ended: like the fetch that pipe(res) would
      // have made, this is a late error, logged at debug level by failByPlugin.
      if (state === WAITING) this.reply.failByPlugin(new CancelledError({ cause: this.reply.endReason }))
      return
    }
    // Before the head: the contract's 502/504. After it: the client connection is cut.
    this.reply.failByPlugin(state === WAITING ? toUpstreamError(error) : error)
  }

  dispatched (): void {
    this.#dispatching = false
  }

  #cancel (): void {
    this.#cancelled = true
    this.#abort?.()
  }

  /** undici calls exactly one of onComplete and onError. */
  #done (): void {
    this.#state = DONE
    this.reply.inflight?.delete(this)
    this.reply.lastActivity = Date.now()
    this.#resolve()
  }
}

export function pipeDirect (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<void> {
  const refused = refusal(reply, url)
  if (refused !== null) return failLater(reply, refused)
  const plugin = reply.route.plugin
  let target: URL
  try {
    target = typeof url === 'string' ? new URL(url) : url
  } catch (error) {
    return failLater(reply, toUpstreamError(error))
  }
  const method = options?.method ?? 'GET'
  let resolve!: () => void
  const done = new Promise<void>((_resolve) => { resolve = _resolve })
  const pipe = new DirectPipe(reply, method, url, resolve)
  reply.track(pipe)
  const dispatchOptions: Dispatcher.DispatchOptions = {
    origin: target.origin,
    path: pathOf(target),
    method: method as Dispatcher.HttpMethod
  }
  if (options !== undefined) {
    if (options.headers !== undefined) dispatchOptions.headers = options.headers
    if (options.body !== undefined) dispatchOptions.body = options.body
    if (options.query !== undefined) dispatchOptions.query = options.query
    if (options.headersTimeout !== undefined) dispatchOptions.headersTimeout = options.headersTimeout
    if (options.bodyTimeout !== undefined) dispatchOptions.bodyTimeout = options.bodyTimeout
  }
  try {
    plugin.dispatcher.dispatch(dispatchOptions, pipe)
  } catch (error) {
    // undici's own dispatchers report through onError; another dispatcher may throw.
    pipe.onError(error as Error)
  }
  pipe.dispatched()
  return done
}

/** A failure found before anything was sent: reported after the caller's synchronous code, as an awaited fetch would. */
async function failLater (reply: AsyncReplyImpl, error: Error): Promise<void> {
  await undefined
  reply.failByPlugin(error)
}
