// Upstream requests through undici: `fetch` bound to its reply, the origin allow-list, and
// `pipe` with hop-by-hop filtering and backpressure.
import type { OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { Dispatcher, request as undiciRequest, util as undiciUtil } from 'undici'
import { CancelledError, OriginDeniedError, toUpstreamError, UpstreamError } from './errors.js'
import type { AsyncReplyImpl } from './reply.js'
import type { FetchOptions, UpstreamRequest, UpstreamResponse } from './types.js'
import { safeUrl, type InflightRequest } from './watchdog.js'

/** An upstream request a reply waits on; the reply releases it when it ends. */
export interface Releasable extends InflightRequest {
  /** The reply ended (`abnormal`: any way but finish()/pipe() completing). */
  release (abnormal: boolean): void
}

/**
 * Headers that describe one connection, not the message: never copied from an upstream
 * response to the client (RFC 9110 §7.6.1, plus the legacy `keep-alive`/`proxy-*` ones).
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  // Connection-specific in HTTP/2 too (RFC 9113 §3.2): Node's HTTP/2 response refuses it.
  'http2-settings'
])

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
      // (finish() during pipe()): its next chunk would be a write after end, thrown as an
      // uncaught 'error' on the response.
      body.unpipe()
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

function originAllowed (allowed: ReadonlySet<string>, url: string | URL): boolean {
  try {
    return allowed.has(new URL(url).origin)
  } catch {
    return false
  }
}

/** `reply.fetch()`: undici's `request` through the plugin's dispatcher, bound to the reply. */
export function fetchUpstream (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<UpstreamResponse> {
  if (!reply.open) return Promise.reject(new CancelledError({ cause: reply.endReason }))
  const plugin = reply.route.plugin
  if (plugin.allowedOrigins !== null && !originAllowed(plugin.allowedOrigins, url)) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return Promise.reject(new OriginDeniedError())
  }
  const method = options?.method ?? 'GET'
  const inflight = new Inflight(reply, method, url)
  reply.inflight ??= new Set()
  reply.inflight.add(inflight)
  return new Promise((resolve, reject) => {
    inflight.resolve = resolve
    inflight.reject = reject
    try {
      // A plain GET of an http(s) URL: what `undici.request(url)` would pass to the dispatcher,
      // without its copy of the options. Anything else goes through `undici.request` itself.
      const target = options === undefined ? httpUrl(url) : null
      if (target !== null) {
        const dispatchOptions = { origin: target.origin, path: target.search === '' ? target.pathname : target.pathname + target.search, method, signal: inflight }
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

/** The upstream headers that may reach the client. */
function forwardableHeaders (headers: UpstreamResponse['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const name of Object.keys(headers)) {
    if (!HOP_BY_HOP.has(name)) out[name] = headers[name]
  }
  const connection = headers.connection
  return connection === undefined ? out : withoutNamed(out, connection)
}

/**
 * Removes the headers that the upstream's `connection` header names. Its usual values
 * (`keep-alive`, `close`) name only hop-by-hop headers, which are already gone: no copy then.
 */
function withoutNamed (out: OutgoingHttpHeaders, connection: string | string[]): OutgoingHttpHeaders {
  if (connection === 'keep-alive' || connection === 'close') return out
  let named: Set<string> | null = null
  for (const token of String(connection).split(',')) {
    const name = token.trim().toLowerCase()
    if (Object.hasOwn(out, name)) (named ??= new Set()).add(name)
  }
  if (named === null) return out
  const kept: OutgoingHttpHeaders = {}
  for (const name of Object.keys(out)) {
    if (!named.has(name)) kept[name] = out[name]
  }
  return kept
}

/** Like `forwardableHeaders`, from undici's raw `[name, value, …]` list, in one pass. */
function forwardableRawHeaders (raw: Buffer[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = undiciUtil.headerNameToString(raw[i] as Buffer)
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') connection = connection === undefined ? (raw[i + 1] as Buffer).toString('latin1') : `${connection},${(raw[i + 1] as Buffer).toString('latin1')}`
      continue
    }
    // Assigning `__proto__` would not create a header (forwardableHeaders drops it the same way).
    if (name === '__proto__') continue
    const value = (raw[i + 1] as Buffer).toString('latin1')
    const previous = out[name]
    if (previous === undefined) {
      out[name] = value
    } else if (Array.isArray(previous)) {
      previous.push(value)
    } else {
      out[name] = [String(previous), value]
    }
  }
  return connection === undefined ? out : withoutNamed(out, connection)
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

// ---- pipe(url): the request is dispatched with a handler that writes into the response ----

/**
 * Request options the direct path passes to `dispatch` as they are (`signal` and `dispatcher`
 * are the plugin's own, as for `fetch`). Anything else (a streamed body, `onInfo`,
 * `responseHeaders`, …) takes the general path: `fetch` and then `pipe(res)`.
 */
const DIRECT_OPTIONS = new Set(['method', 'headers', 'body', 'query', 'headersTimeout', 'bodyTimeout', 'signal', 'dispatcher'])

function isDirect (options: FetchOptions | undefined): boolean {
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

function pipeDirect (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<void> {
  if (!reply.open) return failLater(reply, new CancelledError({ cause: reply.endReason }))
  const plugin = reply.route.plugin
  if (plugin.allowedOrigins !== null && !originAllowed(plugin.allowedOrigins, url)) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    return failLater(reply, new OriginDeniedError())
  }
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
  reply.inflight ??= new Set()
  reply.inflight.add(pipe)
  const dispatchOptions: Dispatcher.DispatchOptions = {
    origin: target.origin,
    path: target.search === '' ? target.pathname : target.pathname + target.search,
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
