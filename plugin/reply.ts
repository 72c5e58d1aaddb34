// `AsyncReply`: the public surface of a reply — its head, its body methods — and `#end()`,
// the one place where a reply ends. What it delegates: the error answer (error-answer.ts),
// HTTP/1 vs HTTP/2 (raw-response.ts), reports (report.ts), upstream requests (fetch.ts,
// pipe.ts, forward.ts, through the ReplyPort it implements).
import { AsyncResource } from 'node:async_hooks'
import { validateHeaderName, validateHeaderValue, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { bodyType, byteLength, encodeBody, isBytes, JSON_TYPE, OCTET, TEXT } from './body.js'
import type { PluginContext, RouteContext } from './context.js'
import { checkDuration } from './durations.js'
import { errorAnswer, LEFT_UNFINISHED, logAnswer, logError, NOT_RENDERED, RENDERED, warnRenderUnfinished, type ErrorAnswer, type Rendering } from './error-answer.js'
import { incomingBudget } from './deadline.js'
import { ClientGoneError, ClosingError, InvalidArgumentError, RewriteHeadersError, UpstreamError } from './errors.js'
import { forwardableHeaders, isRelayableStatus, rewrittenHeaders } from './headers.js'
import { compressible, createCompressor, markEncoded, negotiate, varyOnEncoding, type CompressPolicy, type Compressor } from './compression.js'
import { bodyUnread, closeConnectionAfter, cut, isGone, needsDrain } from './raw-response.js'
import { timeoutChannel, type Tracked } from './registry.js'
import type { RelaySource, ReplyPort, UpstreamCall } from './reply-port.js'
import { hangReport, pendingEntry, type ReplyFacts } from './report.js'
import { ReplyClock } from './reply-clock.js'
import { forwardRequest } from './forward.js'
import type { ResolvedRetry } from './retry-policy.js'
import type { Watched } from './watchdog-queue.js'
import type { AsyncReply, ErrorFirstCallback, ReplyOutcome, RewriteHeaders, FetchCallback, FetchOptions, ForwardOptions, HangReport, PendingReply, PipeOptions, UpstreamRequest, UpstreamResponse } from './types.js'
import { fetchUpstream, fetchWithCallback } from './fetch.js'
import { pipeUpstream } from './pipe.js'
import { callAppCallback } from './user-code.js'
import { kAsyncContext, kAwaitingFinish, kBytesWritten, kCalls, kClientGone, kEndForClose, kEnqueueWatchdog, kEndReason, kFailByPlugin, kHandlerSettled, kHangReport, kNoteSignOfLife, kOpen, kOpenNext, kOpenPrev, kPendingEntry, kPlugin, kRanOut, kRearmWatchdog, kRecheckRoom, kRelayChunk, kRelayEnd, kRelayHead, kRenderedAnswer, kRenderOverload, kRetry, kRoute, kSettle, kStart, kStartClock, kStopClock, kTrack, kUntrack, kWatch, kWatchesIdle } from './symbols.js'

// How a reply ended. The handler's own finish()/fail() are told apart from the plugin's ends,
// because a second call after the former is a bug worth a warning, after the latter it is not.
const OPEN = 0
const FINISHED = 1
const FAILED_BY_HANDLER = 2
const FAILED_BY_PLUGIN = 3
const TIMED_OUT = 4
const ABORTED = 5
const CLOSED = 6
type EndState = typeof OPEN | typeof FINISHED | typeof FAILED_BY_HANDLER | typeof FAILED_BY_PLUGIN | typeof TIMED_OUT | typeof ABORTED | typeof CLOSED

const RESOLVED = Promise.resolve()

// The reply behind a Node response, for the shared `close` listener (no closure per request).
const kReply = Symbol('fastify-async-route.reply')
type RawWithReply = ServerResponse & { [kReply]?: AsyncReplyImpl }

export class AsyncReplyImpl extends ReplyClock implements AsyncReply, Tracked, ReplyPort, ReplyFacts, Watched {
  readonly request: FastifyRequest
  readonly raw: ServerResponse
  readonly [kRoute]: RouteContext
  /**
   * The async context the request's handler runs in (AsyncLocalStorage stores, the active
   * span): what the plugin runs for this reply from a timer or a socket event runs in it.
   */
  readonly [kAsyncContext] = new AsyncResource('fastify-async-route')
  readonly #fastifyReply: FastifyReply
  /**
   * An HTTP/2 stream (no socket of its own, no connection-specific headers). Per request: an
   * HTTP/2 server with `allowHTTP1` serves HTTP/1.1 requests too.
   */
  readonly #http2: boolean
  #statusCode = 200
  #head: OutgoingHttpHeaders | null = null
  #state: EndState = OPEN
  #reason: unknown = undefined
  /** The watchdog (or idleTimeout) fired, even if `onTimeout` then answered: its error. */
  #timeoutError: Error | null = null
  #controller: AbortController | null = null
  #closeListeners: Array<() => void> | null = null
  #endListeners: Array<(outcome: ReplyOutcome) => void> | null = null
  /** A relaying source to look at again once Node uncorked (see relayChunk). */
  #recheck: RelaySource | null = null
  /** What every pending `flush()` waits for when the socket buffer is full. */
  #drained: Promise<void> | null = null
  /** `renderError` is answering: `finish()` writes its answer, the reply's end stays as it was. */
  #rendering = false
  /** `compress`: the body goes through this on its way to `raw` (chosen with the head). */
  #compressor: Compressor | null = null
  #handlerSettled = false
  #bytesWritten = 0
  /**
   * Upstream requests whose headers or body are still outstanding; created on first use. An
   * array, not a Set: a reply has one or two, and a Set costs an allocation and a hash each.
   */
  #calls: UpstreamCall[] | null = null
  /**
   * Its neighbours in the registry's list of open replies, which only the registry sets
   * (through the accessors below). Private, so that a reply logged or inspected shows no
   * other request.
   */
  #openPrev: Tracked | null = null
  #openNext: Tracked | null = null

  constructor (route: RouteContext, request: FastifyRequest, fastifyReply: FastifyReply) {
    super()
    this[kRoute] = route
    this.request = request
    this.#fastifyReply = fastifyReply
    this.raw = fastifyReply.raw
    this.#http2 = request.raw.httpVersionMajor === 2
  }

  /** Called once by the route before the handler: registers the reply, starts its clock. */
  [kStart] (): void {
    const route = this[kRoute]
    const registry = route.plugin.registry
    registry.add(this)
    if (route.maxPending > 0) route.open++
    this[kStartClock](route.plugin.deadlineHeader === null ? route.timeout : incomingBudget(route, this.request))
    if (isGone(this.raw, this.#http2)) {
      // The client left while hooks or body parsing ran.
      this[kClientGone]()
    } else if (registry.closing && !registry.inGrace) {
      // Its hooks were still running when close() began, and the grace is already over.
      this[kEndForClose]()
    }
  }

  /**
   * Called by the route once the handler returned with the reply still open: the watchdog
   * joins its route's queue and the client's leaving is listened for. Neither could act while
   * the handler ran (timers and socket events wait for it), and a reply finished inside its
   * handler, the common case, never needs them.
   */
  [kWatch] (): void {
    this[kEnqueueWatchdog]()
    const raw = this.raw as RawWithReply
    raw[kReply] = this
    raw.on('close', onRawClose)
  }

  get [kOpenPrev] (): Tracked | null {
    return this.#openPrev
  }

  set [kOpenPrev] (reply: Tracked | null) {
    this.#openPrev = reply
  }

  get [kOpenNext] (): Tracked | null {
    return this.#openNext
  }

  set [kOpenNext] (reply: Tracked | null) {
    this.#openNext = reply
  }

  get finished (): boolean {
    return this.#state !== OPEN
  }

  get headersSent (): boolean {
    return this.raw.headersSent
  }

  get [kOpen] (): boolean {
    return this.#state === OPEN
  }

  get [kPlugin] (): PluginContext {
    return this[kRoute].plugin
  }

  get [kHandlerSettled] (): boolean {
    return this.#handlerSettled
  }

  get [kBytesWritten] (): number {
    return this.#bytesWritten
  }

  get [kCalls] (): readonly UpstreamCall[] | null {
    return this.#calls
  }

  get signal (): AbortSignal {
    // Created on first use: most replies never need one.
    if (this.#controller === null) {
      this.#controller = new AbortController()
      // An open reply has not ended at all: only a reply that already ended abnormally
      // hands out an aborted signal.
      if (this.#state !== OPEN && this.#abnormal()) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  /** How the reply ended, for a fetch that it cancelled. */
  get [kEndReason] (): unknown {
    return this.#reason
  }

  status (code: number): this {
    // Fastify's own range; HTTP/2 refuses anything above 599.
    if (!Number.isInteger(code) || code < 100 || code > 599) {
      throw new InvalidArgumentError(`reply.status() takes an integer status code from 100 to 599, got ${String(code)}`)
    }
    if (this.#headIsOut('status')) return this
    this.#statusCode = code
    return this
  }

  code (code: number): this {
    return this.status(code)
  }

  header (name: string, value: string | number | readonly string[]): this {
    validateHeaderName(name)
    validateHeaderValue(name, value as string)
    if (this.#headIsOut('header')) return this
    this.#head ??= {}
    this.#head[name.toLowerCase()] = value as string | number | string[]
    return this
  }

  headers (headers: Record<string, string | number | readonly string[]>): this {
    for (const name of Object.keys(headers)) this.header(name, headers[name] as string)
    return this
  }

  type (contentType: string): this {
    if (this.#headIsOut('type')) return this
    return this.header('content-type', contentType)
  }

  /** A header of the head the reply sends: the handler's over the hooks' (once sent, the whole head). */
  getHeader (name: string): string | number | string[] | undefined {
    const lower = String(name).toLowerCase()
    return this.#head?.[lower] ?? this.#fastifyReply.getHeader(lower)
  }

  hasHeader (name: string): boolean {
    return this.getHeader(name) !== undefined
  }

  removeHeader (name: string): this {
    if (this.#headIsOut('removeHeader')) return this
    const lower = String(name).toLowerCase()
    if (this.#head !== null) delete this.#head[lower]
    this.#fastifyReply.removeHeader(lower)
    return this
  }

  /** Fastify's `reply.redirect(url, code)`: `location`, the status, an empty body. */
  redirect (url: string, code = 302): this {
    if (this.#state !== OPEN) {
      this.#late('redirect')
      return this
    }
    this.status(code).header('location', url).finish()
    return this
  }

  write (chunk: string | Uint8Array): boolean {
    const isString = typeof chunk === 'string'
    if (!isString && !isBytes(chunk)) {
      throw new InvalidArgumentError('reply.write() takes a string or bytes')
    }
    if (this.#state !== OPEN) {
      this.#late('write')
      return false
    }
    if (!this.raw.headersSent) this.#writeHead(this.#statusCode, isString ? TEXT : OCTET, undefined)
    this.#bytesWritten += byteLength(chunk)
    this[kNoteSignOfLife]()
    return (this.#compressor ?? this.raw).write(chunk)
  }

  flush (): Promise<void> {
    if (this.#state !== OPEN) return RESOLVED
    this[kNoteSignOfLife]()
    const raw = this.raw
    if (!raw.headersSent) {
      this.#writeHead(this.#statusCode, undefined, undefined)
      raw.flushHeaders()
    }
    // A compressed stream: what the compressor holds goes out now (each server-sent event).
    if (this.#compressor !== null) return this.#flushCompressor(this.#compressor)
    return needsDrain(raw, this.#http2) ? this.#drain() : RESOLVED
  }

  finish (body?: unknown): void {
    if (this.#state !== OPEN && !this.#rendering) return this.#late('finish')
    let payload
    try {
      payload = encodeBody(body)
    } catch (error) {
      return this.#failWith(error, FAILED_BY_PLUGIN)
    }
    const raw = this.raw
    const length = payload === undefined ? 0 : byteLength(payload)
    if (!raw.headersSent) {
      this.#writeHead(this.#statusCode, bodyType(body), length)
    } else if (this.#endsConnection) {
      closeConnectionAfter(raw)
    }
    const sink = this.#compressor ?? raw
    if (payload === undefined) {
      sink.end()
    } else {
      this.#bytesWritten += length
      sink.end(payload)
    }
    // A renderError answer: the reply ended already (or, for the overload 503, never started).
    if (!this.#rendering) this.#end(FINISHED, undefined)
  }

  fail (error: unknown): void {
    if (this.#state !== OPEN) return this.#late('fail')
    this.#failWith(error, FAILED_BY_HANDLER)
  }

  fetch (url: string | URL, options?: FetchOptions | FetchCallback | ErrorFirstCallback, callback?: FetchCallback | ErrorFirstCallback): any {
    if (typeof options === 'function') {
      callback = options
      options = undefined
    }
    if (callback === undefined) return fetchUpstream(this, url, options)
    fetchWithCallback(this, url, options, callback)
  }

  pipe (source: UpstreamResponse | string | URL | UpstreamRequest, options?: PipeOptions): Promise<void> {
    return pipeUpstream(this, source, options)
  }

  forward (url: string | URL, options?: ForwardOptions): Promise<void> {
    return forwardRequest(this, url, options)
  }

  /** The route's retry policy. */
  get [kRetry] (): ResolvedRetry {
    return this[kRoute].retry
  }

  setTimeout (ms: number): this {
    checkDuration('reply.setTimeout():', 'ms', ms)
    if (this.#state !== OPEN) return this
    this[kRearmWatchdog](ms)
    return this
  }

  onClose (fn: () => void): this {
    if (typeof fn !== 'function') throw new InvalidArgumentError('reply.onClose() takes a function')
    if (this.#state === OPEN) {
      // `[fn]`, not `[]` then push: an array grown by push reserves room for 17 (a waiting
      // reply's memory counts when tens of thousands wait).
      if (this.#closeListeners === null) this.#closeListeners = [fn]
      else this.#closeListeners.push(fn)
    }
    return this
  }

  onEnd (fn: (outcome: ReplyOutcome) => void): this {
    if (typeof fn !== 'function') throw new InvalidArgumentError('reply.onEnd() takes a function')
    if (this.#state === OPEN) {
      if (this.#endListeners === null) this.#endListeners = [fn]
      else this.#endListeners.push(fn)
    } else {
      this.#runListener(fn, outcomeOf(this.#state, this.#timeoutError !== null), 'onEnd')
    }
    return this
  }

  // ---- used by the route, the upstream side (ReplyPort) and the registry (Tracked) ----

  /** The handler (or `onUpstreamError`) returned or settled: a sign of life, if the reply is still open. */
  [kSettle] (): void {
    this.#handlerSettled = true
    // (Nothing reads the clock of an ended reply: most end inside their handler.)
    if (this.#state === OPEN) this[kNoteSignOfLife]()
  }

  [kTrack] (call: UpstreamCall): void {
    if (this.#calls === null) this.#calls = [call]
    else this.#calls.push(call)
  }

  [kUntrack] (call: UpstreamCall): void {
    const calls = this.#calls
    if (calls !== null) {
      // The usual case, the only call or the latest, needs no array for splice() to return.
      // (A call that is not there, -1, becomes an index past the end: nothing is removed.)
      if (calls[calls.length - 1] === call) calls.pop()
      else calls.splice(calls.indexOf(call) >>> 0, 1)
    }
    this[kNoteSignOfLife]()
  }

  /** The client left before the reply was finished. */
  [kClientGone] (): void {
    if (this.#state !== OPEN) return
    const listeners = this.#closeListeners
    this.#closeListeners = null
    this.#end(ABORTED, new ClientGoneError())
    if (listeners !== null) {
      for (const fn of listeners) this.#runListener(fn, undefined, 'onClose')
    }
    // nginx's 499: worth a line, not an alarm (once the reply has ended: a logger that throws
    // leaves nothing open).
    this.request.log.info('the client closed the connection before the reply was finished')
  }

  /** Ends the reply for a failure the handler did not report itself (throw, upstream error). */
  [kFailByPlugin] (error: unknown): void {
    // An upstream failure is reported from undici's callbacks, in the context of whichever
    // request opened the socket: the error answer, its log line and onEnd run in the reply's.
    this[kAsyncContext].runInAsyncScope(this.#failWith, this, error, FAILED_BY_PLUGIN)
  }

  [kEndForClose] (): void {
    this.#failWith(new ClosingError(), CLOSED)
  }

  [kHangReport] (now: number): HangReport {
    return hangReport(this, now)
  }

  [kPendingEntry] (now: number): PendingReply {
    return pendingEntry(this, now)
  }

  get [kAwaitingFinish] (): boolean {
    return this.#handlerSettled && (this.#calls === null || this.#calls.length === 0)
  }

  /**
   * Relays the head of an upstream answer (`pipe`, `forward`): the base headers, the
   * upstream's less the hop-by-hop ones, then the handler's. True when its body is to follow;
   * false when the reply is done with this answer: a HEAD request (answered now), or a head
   * that cannot be written (answered 502, a bad upstream response; 500 when rewriteHeaders
   * returned a header Node refuses).
   */
  [kRelayHead] (statusCode: number, upstreamHeaders: IncomingHttpHeaders, rewrite: RewriteHeaders | null): boolean {
    if (this[kWatchesIdle]) this[kNoteSignOfLife]()
    const raw = this.raw
    if (!raw.headersSent) {
      let relayed = forwardableHeaders(upstreamHeaders)
      if (rewrite !== null) {
        try {
          // The app's callback, in its request's context (undici calls back in another's).
          relayed = this[kAsyncContext].runInAsyncScope(rewrittenHeaders, null, rewrite, relayed, this.request)
        } catch (error) {
          this[kFailByPlugin](new RewriteHeadersError({ cause: error }))
          return false
        }
      }
      if (!isRelayableStatus(statusCode)) {
        this[kFailByPlugin](new UpstreamError({ cause: new RangeError(`upstream status ${statusCode} is outside 100-599`) }))
        return false
      }
      try {
        this.#writeHead(statusCode, undefined, undefined, relayed)
      } catch (error) {
        // Node's HTTP/2 response keeps what a failed writeHead stored (`:status` included),
        // which would break the error answer's head too: start from a clean head. (Over
        // HTTP/1, the failed writeHead kept its reason phrase: the 502 would go out as "502 OK".)
        for (const name of raw.getHeaderNames()) raw.removeHeader(name)
        if (!this.#http2) raw.statusMessage = ''
        // A head the client's protocol refuses (HTTP/2: a connection-specific header, two
        // values of a single-value one), whoever put it there: rewriteHeaders' result was
        // checked already for what Node refuses on every protocol (CR/LF, a bad name).
        this[kFailByPlugin](new UpstreamError({ cause: error }))
        return false
      }
    }
    if (this.request.method === 'HEAD') {
      this[kRelayEnd]()
      return false
    }
    return true
  }

  /**
   * Relays a chunk of an upstream body. False when the client's socket buffer is full:
   * `source.resume()` is called once it drained (or the response closed). A chunk that arrives after
   * the reply was finished (`finish()` while piping) is dropped.
   */
  [kRelayChunk] (chunk: Buffer, source: RelaySource): boolean {
    const compressor = this.#compressor
    const body = compressor ?? this.raw
    if (body.writableEnded) return true
    this.#bytesWritten += chunk.length
    if (this[kWatchesIdle]) this[kNoteSignOfLife]()
    const room = body.write(chunk)
    // Chunk by chunk, so that a relayed event stream stays live through the compressor.
    if (compressor !== null) compressor.flush()
    if (room) return true
    if (compressor === null && !this.#http2 && this.raw.writableCorked > 0) {
      // Node corks a response for the rest of the tick it is written in, so a full buffer now
      // may be only this tick's writes, which go out when it uncorks (its nextTick, queued
      // before this one). Look again then, and pause the source only if the client is really
      // behind: a pause and a resume of the upstream cost about 40 µs per 64 KiB answer. (What
      // the source hands on meanwhile, in this tick, is at most the rest of one socket read.)
      if (this.#recheck === null) {
        this.#recheck = source
        process.nextTick(recheckRoom, this)
      }
      return true
    }
    this.#pauseUntilDrained(source)
    return false
  }

  /** The tick that wrote relayed chunks is over (Node uncorked): pause the source if the client's buffer is still full. */
  [kRecheckRoom] (): void {
    const source = this.#recheck as RelaySource
    this.#recheck = null
    const raw = this.raw
    // (Not `writableNeedDrain`: it stays set until 'drain' is emitted, even once all went out.)
    if (this.#state !== OPEN || raw.writableLength < raw.writableHighWaterMark) return
    source.pause()
    this.#pauseUntilDrained(source)
  }

  #pauseUntilDrained (source: RelaySource): void {
    void this.#drain().then(() => { source.resume() })
  }

  /** The relayed body ended: the response is complete. */
  [kRelayEnd] (): void {
    if (this.#state !== OPEN) return
    const raw = this.raw
    if (this.#endsConnection) closeConnectionAfter(raw)
    if (this.#compressor !== null) {
      this.#compressor.end()
    } else if (!this.#http2 && raw.writableCorked > 0) {
      // The last chunk was written in this same tick (the direct path relays it and the end
      // together), so Node still holds it corked: ended now, the response would flush it with
      // an empty end write (a writev and one more syscall per answer). Ended once Node has
      // uncorked (its own nextTick, queued first), the chunk goes out alone and the end writes
      // nothing.
      process.nextTick(endResponse, raw)
    } else {
      raw.end()
    }
    this.#end(FINISHED, undefined)
  }

  // ---- internals ----

  /**
   * Resolves when the response's socket buffer drained, or the response closed. One pair of
   * listeners however many wait (`flush()` calls, a paused upstream body): a loop that does not
   * await its `flush()` must not pile them up.
   */
  #drain (): Promise<void> {
    if (this.#drained !== null) return this.#drained
    const raw = this.raw
    // (With a compressor, its buffer is what fills up: it drains as the response takes its output.)
    const body = this.#compressor ?? raw
    this.#drained = new Promise((resolve) => {
      const done = (): void => {
        body.off('drain', done)
        raw.off('close', done)
        this.#drained = null
        resolve()
      }
      body.on('drain', done)
      raw.on('close', done)
    })
    return this.#drained
  }

  /** `flush()` of a compressed body: the compressor's output handed on, then the socket drained. */
  #flushCompressor (compressor: Compressor): Promise<void> {
    return new Promise<void>((resolve) => compressor.flush(() => resolve()))
      .then(() => needsDrain(this.raw, this.#http2) ? this.#drain() : undefined)
  }

  /**
   * `compress`: chooses the encoding of a body answer whose head is about to go out, and puts
   * the compressor in front of the response. Every answer that could be compressed varies by
   * `accept-encoding`, compressed or not.
   */
  #chooseEncoding (policy: CompressPolicy, statusCode: number, headers: OutgoingHttpHeaders): void {
    if (this.request.method === 'HEAD' || !compressible(statusCode, headers)) return
    varyOnEncoding(headers)
    const length = headers['content-length']
    if (length !== undefined && Number(length) < policy.threshold) return
    const encoding = negotiate(policy, this.request.headers['accept-encoding'])
    if (encoding === null) return
    markEncoded(headers, encoding)
    const compressor = createCompressor(policy, encoding)
    const raw = this.raw
    const http2 = this.#http2
    // (zlib fails only on misuse; the answer could not be completed: cut, never a clean end.)
    compressor.on('error', () => cut(raw, http2))
    compressor.pipe(raw)
    this.#compressor = compressor
  }

  /**
   * The watchdog or the idle timeout ran out: the warning with the hang report, the
   * diagnostics message, the route's `onWatchdog` (or the plugin's `onTimeout`), then the
   * default answer.
   */
  [kRanOut] (report: HangReport, message: string, error: Error & { code: string }): void {
    this.#timeoutError = error
    try {
      this.request.log.warn({ report }, message)
    } finally {
      // The reply ends even if the app's logger threw: its error goes on to the process.
      this.#timedOut(report, error)
    }
  }

  #timedOut (report: HangReport, error: Error & { code: string }): void {
    // `code` tells the watchdog (FST_ASYNC_ROUTE_TIMEOUT) from idleTimeout (…_IDLE_TIMEOUT).
    if (timeoutChannel.hasSubscribers) timeoutChannel.publish({ request: this.request, report, code: error.code })
    const onWatchdog = this[kRoute].onWatchdog
    try {
      if (onWatchdog !== null) callAppCallback(this[kAsyncContext], this.request.log, 'onTimeout', onWatchdog, this.request, this, report)
    } finally {
      // (onTimeout may have answered itself. Only a logger that throws twice, on onTimeout's
      // own error, gets a throw out of callAppCallback: the reply ends all the same.)
      if (this.#state === OPEN) this.#failWith(error, TIMED_OUT)
    }
  }

  /** Ends the reply with an error answer, or cuts the connection if the head is out. */
  #failWith (error: unknown, state: typeof FAILED_BY_PLUGIN | typeof FAILED_BY_HANDLER | typeof TIMED_OUT | typeof CLOSED): void {
    if (this.#state !== OPEN) {
      logError(this.request.log, 'debug', error, 'async reply already ended; error ignored')
      return
    }
    const answer = errorAnswer(error)
    this.#end(state, answer.error)
    this.#sendError(answer)
    // Logged once the answer is out, so that a logger that throws leaves no client waiting. The
    // watchdog's and idleTimeout's 504s were logged once already, as the warning with the hang
    // report (ranOut).
    if (state !== TIMED_OUT) logAnswer(this.request.log, answer)
  }

  /** The error answer of a reply that has just ended: rendered, the default JSON, or a cut connection. */
  #sendError (answer: ErrorAnswer): void {
    const raw = this.raw
    const http2 = this.#http2
    if (raw.headersSent || isGone(raw, http2)) {
      cut(raw, http2)
      return
    }
    const rendered = this[kRoute].renderError === null ? NOT_RENDERED : this[kRenderedAnswer](answer)
    if (rendered === RENDERED) return
    try {
      // The answer is JSON whatever content type the handler had set for its own body.
      this.#writeHead(answer.status, JSON_TYPE, Buffer.byteLength(answer.body), undefined, true)
      raw.end(answer.body)
    } catch (headError) {
      // A header Node refuses (set unchecked on the Fastify reply by a hook, say): this runs
      // from timers and callbacks, where a throw would crash the process. Cut instead.
      cut(raw, http2)
      logError(this.request.log, 'error', headError, 'async reply: the error answer could not be sent')
    }
    if (rendered === LEFT_UNFINISHED) warnRenderUnfinished(this.request.log)
  }

  /**
   * `renderError`: the app renders an error answer before the head (its own format,
   * `application/problem+json` say), synchronously, in the request's context; `error` carries
   * `code` and `statusCode`. RENDERED when it finished the reply; otherwise the default answer
   * is to go out (what it set on the head is dropped): NOT_RENDERED when it threw (logged),
   * LEFT_UNFINISHED when it returned without finishing (warned about once the default answer
   * is out). The reply has ended already (see `renderOverload` for the one that never started).
   */
  [kRenderedAnswer] (answer: ErrorAnswer): Rendering {
    const render = this[kRoute].renderError as NonNullable<RouteContext['renderError']>
    const error = answer.error as Error & { statusCode?: unknown }
    try {
      if (error.statusCode === undefined) error.statusCode = answer.status
    } catch {
      // A frozen error (or one that refuses the property) keeps what it had.
    }
    const { raw } = this
    const head = this.#head === null ? null : { ...this.#head }
    const statusCode = this.#statusCode
    this.#statusCode = answer.status
    this.#rendering = true
    let returned: boolean
    try {
      returned = callAppCallback(this[kAsyncContext], this.request.log, 'renderError', render, error, this.request, this)
    } finally {
      // (Only a logger that throws twice gets a throw out of callAppCallback.)
      this.#rendering = false
    }
    // (Only finish() answers while rendering: the reply has ended, write(), flush() and the rest
    // are ignored as on any ended reply.)
    if (raw.writableEnded) return RENDERED
    this.#head = head
    this.#statusCode = statusCode
    return returned ? LEFT_UNFINISHED : NOT_RENDERED
  }

  /** `renderedAnswer` for the `maxPending` 503: a reply that never started, ended as refused. */
  [kRenderOverload] (answer: ErrorAnswer): Rendering {
    this.#state = FAILED_BY_PLUGIN
    return this[kRenderedAnswer](answer)
  }

  #headIsOut (method: string): boolean {
    if (!this.raw.headersSent) return false
    this.request.log.warn(`reply.${method}() ignored: the response head was already sent`)
    return true
  }

  /** `isError`: an error answer, always JSON, never compressed. */
  #writeHead (statusCode: number, contentType: string | undefined, length: number | undefined, upstream?: OutgoingHttpHeaders, isError = false): void {
    // Headers set on the Fastify reply before the handler ran are the base; Fastify itself
    // would drop them after hijack().
    const headers = this.#fastifyReply.getHeaders()
    if (upstream !== undefined) Object.assign(headers, upstream)
    if (this.#head !== null) Object.assign(headers, this.#head)
    if (contentType !== undefined && (isError || headers['content-type'] === undefined)) headers['content-type'] = contentType
    // A string, as Fastify writes it: Node checks each value with a regular expression, which
    // takes V8's slow path for a number.
    if (length !== undefined) headers['content-length'] = String(length)
    if (this.#endsConnection) headers.connection = 'close'
    const compress = this[kRoute].compress
    if (compress !== null && !isError && !this.#rendering) this.#chooseEncoding(compress, statusCode, headers as OutgoingHttpHeaders)
    this.raw.writeHead(statusCode, headers as OutgoingHttpHeaders)
    // What getHeader() reads from now on: the head as sent.
    this.#head = headers as OutgoingHttpHeaders
  }

  /**
   * While the app closes, a reply also ends its HTTP/1 connection, so that a keep-alive
   * socket cannot hold close() open; so does an answer sent while the request body is still
   * arriving (an upload whose upstream failed or answered early), so that no socket waits on a
   * body nobody reads. (HTTP/2 sessions are closed by Fastify itself; Node closes the stream
   * of an HTTP/2 answer sent before its request body was read.)
   */
  get #endsConnection (): boolean {
    return !this.#http2 && (this[kRoute].plugin.registry.closing || bodyUnread(this.request.raw))
  }

  /** A late call of a public method: a warning if the handler itself had ended the reply. */
  #late (method: string): void {
    const log = this.request.log
    if ((this.#state === FINISHED || this.#state === FAILED_BY_HANDLER) && this.#timeoutError === null) {
      log.warn(`reply.${method}() called after the reply was already ended by the handler; ignored`)
    } else {
      log.debug(`reply.${method}() called after the reply ended; ignored`)
    }
  }

  #abnormal (): boolean {
    return this.#state !== FINISHED || this.#timeoutError !== null
  }

  /** The one place where a reply ends. Every way out goes through here, exactly once. */
  #end (state: Exclude<EndState, typeof OPEN>, reason: unknown): void {
    // onTimeout answered with finish(): the reply still ended because the watchdog fired, and
    // its signal says so like every other timed-out reply's.
    if (reason === undefined && this.#timeoutError !== null) reason = this.#timeoutError
    this.#state = state
    this.#reason = reason
    this[kStopClock]()
    if (this[kRoute].maxPending > 0) this[kRoute].open--
    const abnormal = this.#abnormal()
    if (abnormal && this.#controller !== null) this.#controller.abort(reason)
    // What the compressor still holds of a cut answer is never sent.
    if (abnormal && this.#compressor !== null) this.#compressor.destroy()
    if (this.#calls !== null && this.#calls.length > 0) {
      // A copy: a released call untracks itself.
      for (const call of this.#calls.slice()) call.release(abnormal)
    }
    const outcome = outcomeOf(state, this.#timeoutError !== null)
    this[kRoute].plugin.registry.end(this, outcome)
    const listeners = this.#endListeners
    if (listeners === null) return
    this.#endListeners = null
    for (const fn of listeners) this.#runListener(fn, outcome, 'onEnd')
  }

  /**
   * Runs a user's onClose/onEnd callback in the reply's context (the end may come from a
   * socket event or another request's handler): a throw is logged, never raised.
   */
  #runListener (fn: (outcome: ReplyOutcome) => void, outcome: ReplyOutcome | undefined, name: string): void {
    callAppCallback(this[kAsyncContext], this.request.log, `reply.${name}() callback`, fn, outcome)
  }
}

function outcomeOf (state: EndState, timedOut: boolean): ReplyOutcome {
  if (timedOut || state === TIMED_OUT) return 'timedOut'
  if (state === FINISHED) return 'finished'
  if (state === ABORTED) return 'aborted'
  return 'failed'
}

function recheckRoom (reply: AsyncReplyImpl): void {
  reply[kRecheckRoom]()
}

function endResponse (raw: ServerResponse): void {
  raw.end()
}

function onRawClose (this: RawWithReply): void {
  // `close` after a complete response is the normal end of the exchange, not a client abort.
  // (`writableEnded`, not `writableFinished`: an HTTP/2 stream the client cancelled reports
  // itself finished.)
  if (this.writableEnded) return
  // A socket event runs in the connection's context: the abort (its log line, the abort
  // message, onClose and onEnd) runs in the request's. (Set before this listener was added.)
  const reply = this[kReply] as AsyncReplyImpl
  reply[kAsyncContext].runInAsyncScope(reply[kClientGone], reply)
}
