// Upstream requests through undici: `fetch` bound to its reply, and `pipe` of an upstream
// response with backpressure (`pipe(url)` has its own fast path in pipe-direct.ts).
import type { Readable } from 'node:stream'
import { Dispatcher, request as undiciRequest } from 'undici'
import { CancelledError, toUpstreamError, UpstreamError } from './errors.js'
import { forwardableHeaders } from './headers.js'
import { pathOf, refusal } from './origins.js'
import { isDirect, pipeDirect } from './pipe-direct.js'
import type { AsyncReplyImpl } from './reply.js'
import type { FetchOptions, UpstreamRequest, UpstreamResponse } from './types.js'
import type { Releasable } from './watchdog.js'

const kInflight = Symbol('fastify-async-route.inflight')
type TrackedBody = Readable & { [kInflight]?: Inflight }
/** A body that `pipe()` relays: the reply it feeds and the resolution of `pipe()`'s promise. */
const kPiped = Symbol('fastify-async-route.piped')
type PipedBody = TrackedBody & { [kPiped]: { reply: AsyncReplyImpl, resolve: () => void } }

function noop (): void {}

type RequestCallback = (error: Error | null, response: UpstreamResponse | undefined) => void
/** `undici.request`'s callback form (its types only declare the promise form). */
type RequestWithCallback = (url: string | URL, options: object, callback: RequestCallback) => void
/** `Dispatcher#request`, called on any dispatcher (the plugin's may be any object with `dispatch`). */
const dispatcherRequest = Dispatcher.prototype.request as unknown as (this: Dispatcher, options: object, callback: RequestCallback) => void

/** The URL as `undici.request` would parse it, or null when it is not an http(s) URL (undici then reports it). */
function httpUrl (url: string | URL): URL | null {
  let parsed: URL
  try {
    parsed = typeof url === 'string' ? new URL(url) : url
  } catch {
    return null
  }
  return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed : null
}

/**
 * One upstream request of a reply, from the call until its body was read or released. It is
 * also the `signal` undici gets: undici accepts any object with `aborted`, `reason`,
 * `on`/`once`/`removeListener` (an EventEmitter's shape), which costs far less than an
 * `AbortController` per request.
 */
export class Inflight implements Releasable {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: AsyncReplyImpl
  body: TrackedBody | null = null
  cancelled = false
  /** The fetch's promise. */
  resolve: (response: UpstreamResponse) => void = noop
  reject: (error: Error) => void = noop
  /** undici's abort listeners (one for `request()`, another for a proxy's CONNECT). */
  #listeners: Array<() => void> | null = null

  constructor (reply: AsyncReplyImpl, method: string, url: string | URL) {
    this.reply = reply
    this.method = method
    this.url = url
  }

  // ---- the signal undici sees ----

  get aborted (): boolean {
    return this.cancelled
  }

  get reason (): undefined {
    return undefined
  }

  // undici only ever listens for 'abort'.
  on (_event: 'abort', listener: () => void): this {
    (this.#listeners ??= []).push(listener)
    return this
  }

  once (event: 'abort', listener: () => void): this {
    return this.on(event, listener)
  }

  removeListener (_event: 'abort', listener: () => void): this {
    const listeners = this.#listeners
    // (A listener that is not there, -1, becomes an index past the end: nothing is removed.)
    if (listeners !== null) listeners.splice(listeners.indexOf(listener) >>> 0, 1)
    return this
  }

  /** The reply ended: cancel the request, or release its body so the socket is not leaked. */
  release (abnormal: boolean): void {
    const body = this.body
    if (body === null) {
      this.cancelled = true
      const listeners = this.#listeners
      if (listeners !== null) {
        this.#listeners = null
        for (const listener of listeners) listener()
      }
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

  /** undici's callback: the head arrived, or the request failed. */
  onResponse (error: Error | null, response: UpstreamResponse | undefined): void {
    if (error === null) {
      // undici calls back from inside its onHeaders: what comes after it (a dispatcher's own
      // hooks) runs before the response is taken, as with an awaited promise.
      queueMicrotask(() => this.#accept(response as UpstreamResponse))
      return
    }
    this.done()
    this.reject(this.cancelled ? new CancelledError({ cause: this.reply.endReason }) : toUpstreamError(error))
  }

  #accept (response: UpstreamResponse): void {
    const body = response.body as TrackedBody
    if (this.cancelled) {
      // The reply ended after the head arrived but before this ran: a cancelled fetch never
      // yields a response.
      body.on('error', noop).destroy()
      this.done()
      this.reject(new CancelledError({ cause: this.reply.endReason }))
      return
    }
    this.body = body
    body[kInflight] = this
    body.on('close', onBodyClose)
    // Errors of a body nobody reads must not crash the process; readers still see them.
    body.on('error', noop)
    this.resolve(response)
  }

  done (): void {
    const inflight = this.reply.inflight
    inflight?.delete(this)
    this.reply.lastActivity = Date.now()
  }
}

function onBodyClose (this: TrackedBody & Partial<PipedBody>): void {
  this[kInflight]?.done()
  // A body that pipe() relayed: its promise resolves.
  this[kPiped]?.resolve()
}

/** `reply.fetch()`: undici's `request` through the plugin's dispatcher, bound to the reply. */
export function fetchUpstream (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<UpstreamResponse> {
  const refused = refusal(reply, url)
  if (refused !== null) return Promise.reject(refused)
  const plugin = reply.route.plugin
  const method = options?.method ?? 'GET'
  const inflight = new Inflight(reply, method, url)
  reply.track(inflight)
  return new Promise((resolve, reject) => {
    inflight.resolve = resolve
    inflight.reject = reject
    try {
      // A plain GET of an http(s) URL: what `undici.request(url)` would pass to the dispatcher,
      // without its copy of the options. Anything else goes through `undici.request` itself.
      const target = options === undefined ? httpUrl(url) : null
      if (target !== null) {
        const dispatchOptions = { origin: target.origin, path: pathOf(target), method, signal: inflight }
        dispatcherRequest.call(plugin.dispatcher, dispatchOptions, (error, response) => inflight.onResponse(error, response))
      } else {
        const requestOptions = { ...options, method, dispatcher: plugin.dispatcher, signal: inflight };
        (undiciRequest as unknown as RequestWithCallback)(url, requestOptions, (error, response) => inflight.onResponse(error, response))
      }
    } catch (error) {
      // undici throws synchronously for an invalid URL or options.
      inflight.onResponse(error as Error, undefined)
    }
  })
}

function isResponse (source: unknown): source is UpstreamResponse {
  return typeof (source as UpstreamResponse).statusCode === 'number' && typeof (source as UpstreamResponse).body === 'object'
}

/** `reply.pipe()`: status, headers and body of an upstream response, with backpressure. */
export function pipeUpstream (reply: AsyncReplyImpl, source: UpstreamResponse | string | URL | UpstreamRequest, options: FetchOptions | undefined): Promise<void> {
  if (typeof source === 'string' || source instanceof URL) {
    return isDirect(options) ? pipeDirect(reply, source, options) : pipeFetched(reply, source, options)
  }
  if (isResponse(source)) return streamResponse(reply, source)
  const [url, requestOptions] = splitRequest(source)
  return isDirect(requestOptions) ? pipeDirect(reply, url, requestOptions) : pipeFetched(reply, url, requestOptions)
}

/** `pipe(url)` with options only `request()` understands: `fetch`, then `pipe(res)`. */
async function pipeFetched (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<void> {
  let response: UpstreamResponse
  try {
    response = await fetchUpstream(reply, url, options)
  } catch (error) {
    reply.failByPlugin(error)
    return
  }
  return await streamResponse(reply, response)
}

export function splitRequest (request: UpstreamRequest): [string | URL, FetchOptions] {
  const { url, ...options } = request
  return [url, options]
}

function streamResponse (reply: AsyncReplyImpl, response: UpstreamResponse): Promise<void> {
  const body = response.body
  if (!reply.open) {
    body.destroy()
    return Promise.resolve()
  }
  if (body.destroyed || body.readableEnded) {
    // Nothing more will come from this body (its upstream failed before pipe() was called, or
    // it was already read): none of the events below would fire, and the reply would hang.
    reply.failByPlugin(body.errored ?? new Error('reply.pipe(): the upstream response body was already read or destroyed'))
    return Promise.resolve()
  }
  const raw = reply.raw
  if (!raw.headersSent) {
    try {
      reply.writeUpstreamHead(response.statusCode, forwardableHeaders(response.headers))
    } catch (error) {
      // An upstream head Node refuses to relay (a status or header the client's protocol
      // forbids) is a bad upstream response: 502, not a rejected pipe() and a hanging reply.
      // Node's HTTP/2 response keeps what the failed writeHead stored (`:status` included),
      // which would break the error answer's head too: start from a clean head.
      for (const name of raw.getHeaderNames()) raw.removeHeader(name)
      body.destroy()
      reply.failByPlugin(new UpstreamError({ cause: error }))
      return Promise.resolve()
    }
  }
  if (reply.request.method === 'HEAD') {
    body.dump().catch(noop)
    reply.finishPiped()
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
    if (piped[kInflight] === undefined) piped.on('close', onBodyClose)
  })
}

function onPipedData (this: PipedBody, chunk: Buffer): void {
  const reply = this[kPiped].reply
  const raw = reply.raw
  // The reply was finished while piping (release() stops the bodies it tracks; a response
  // the handler fetched by other means only stops feeding it here).
  if (raw.writableEnded) return
  reply.bytesWritten += chunk.length
  if (!raw.write(chunk)) {
    // Backpressure: wait for the client's socket to drain.
    this.pause()
    raw.once('drain', () => this.resume())
  }
}

function onPipedEnd (this: PipedBody): void {
  this[kPiped].reply.finishPiped()
}

function onPipedError (this: PipedBody, error: Error): void {
  this[kPiped].reply.failByPlugin(error)
}
