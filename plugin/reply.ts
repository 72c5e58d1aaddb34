// `AsyncReply`: the public surface of a reply — its head, its body methods — and `#end()`,
// the one place where a reply ends. What it delegates: the error answer (error-answer.ts),
// HTTP/1 vs HTTP/2 (raw-response.ts), reports (report.ts), upstream requests (upstream.ts,
// through the ReplyPort it implements).
import { validateHeaderName, validateHeaderValue, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { bodyType, byteLength, encodeBody, isBytes, JSON_TYPE, OCTET, TEXT } from './body.js'
import type { PluginContext, RouteContext } from './context.js'
import { checkDuration } from './durations.js'
import { errorAnswer, logAnswer } from './error-answer.js'
import { ClientGoneError, ClosingError, InvalidArgumentError, TimeoutError } from './errors.js'
import { closeConnectionAfter, cut, isGone, needsDrain } from './raw-response.js'
import { timeoutChannel, type Outcome, type Tracked } from './registry.js'
import type { ReplyPort } from './reply-port.js'
import { describeHang, describeIdle, hangReport, pendingEntry, type ReplyFacts, type UpstreamCall } from './report.js'
import { forwardRequest } from './forward.js'
import type { ResolvedRetry } from './retry-policy.js'
import type { AsyncReply, FetchCallback, FetchOptions, ForwardOptions, HangReport, PendingReply, PipeOptions, UpstreamRequest, UpstreamResponse } from './types.js'
import { fetchUpstream, fetchWithCallback, pipeUpstream, type ErrorFirstCallback } from './upstream.js'

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

export class AsyncReplyImpl implements AsyncReply, Tracked, ReplyPort, ReplyFacts {
  readonly request: FastifyRequest
  readonly raw: ServerResponse
  readonly route: RouteContext
  readonly startedAt = Date.now()
  readonly #fastifyReply: FastifyReply
  #statusCode = 200
  #head: OutgoingHttpHeaders | null = null
  #state: EndState = OPEN
  #reason: unknown = undefined
  /** The watchdog fired, even if `onTimeout` then answered. */
  #timedOut = false
  #controller: AbortController | null = null
  #closeListeners: Array<() => void> | null = null
  #endListeners: Array<(outcome: Outcome) => void> | null = null
  #timer: NodeJS.Timeout | null = null
  /** When `#timer` fires (epoch ms); `Infinity` while the watchdog is disarmed. */
  #deadline = Infinity
  #warnedIdle = false
  /** What every pending `flush()` waits for when the socket buffer is full. */
  #drained: Promise<void> | null = null
  #handlerSettled = false
  #bytesWritten = 0
  /** Upstream requests whose headers or body are still outstanding; created on first use. */
  #calls: Set<UpstreamCall> | null = null
  /** Last sign of life (a write, an upstream answer), for `warnUnfinished` and reports. */
  #lastActivity: number

  constructor (route: RouteContext, request: FastifyRequest, fastifyReply: FastifyReply) {
    this.route = route
    this.request = request
    this.#fastifyReply = fastifyReply
    this.raw = fastifyReply.raw
    this.#lastActivity = this.startedAt
  }

  /** Called once by the route: registers the reply, arms the watchdog, listens for the client. */
  start (): void {
    this.route.plugin.registry.add(this)
    if (this.route.timeout > 0) this.#arm(this.route.timeout)
    const raw = this.raw as RawWithReply
    raw[kReply] = this
    raw.on('close', onRawClose)
    const registry = this.route.plugin.registry
    if (isGone(raw, this.route.plugin.http2)) {
      // The client left while hooks or body parsing ran.
      this.clientGone()
    } else if (registry.closing && !registry.inGrace) {
      // Its hooks were still running when close() began, and the grace is already over.
      this.endForClose()
    }
  }

  get finished (): boolean {
    return this.#state !== OPEN
  }

  get headersSent (): boolean {
    return this.raw.headersSent
  }

  get open (): boolean {
    return this.#state === OPEN
  }

  get plugin (): PluginContext {
    return this.route.plugin
  }

  get handlerSettled (): boolean {
    return this.#handlerSettled
  }

  get bytesWritten (): number {
    return this.#bytesWritten
  }

  get calls (): ReadonlySet<UpstreamCall> | null {
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
  get endReason (): unknown {
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
    this.#lastActivity = Date.now()
    return this.raw.write(chunk)
  }

  flush (): Promise<void> {
    if (this.#state !== OPEN) return RESOLVED
    const raw = this.raw
    if (!raw.headersSent) {
      this.#writeHead(this.#statusCode, undefined, undefined)
      raw.flushHeaders()
    }
    if (!needsDrain(raw, this.route.plugin.http2)) return RESOLVED
    // One pair of listeners however many flush() calls wait: a loop that does not await its
    // flush() must not pile them up.
    this.#drained ??= new Promise((resolve) => {
      const done = (): void => {
        raw.off('drain', done)
        raw.off('close', done)
        this.#drained = null
        resolve()
      }
      raw.on('drain', done)
      raw.on('close', done)
    })
    return this.#drained
  }

  finish (body?: unknown): void {
    if (this.#state !== OPEN) return this.#late('finish')
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
    if (payload === undefined) {
      raw.end()
    } else {
      this.#bytesWritten += length
      raw.end(payload)
    }
    this.#end(FINISHED, undefined)
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
  get retry (): ResolvedRetry {
    return this.route.retry
  }

  setTimeout (ms: number): this {
    checkDuration('reply.setTimeout(ms)', ms)
    if (this.#state !== OPEN) return this
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#deadline = Infinity
    if (ms > 0) this.#arm(ms)
    return this
  }

  /** Epoch ms when the watchdog fires; `Infinity` while it is disarmed. */
  get deadline (): number {
    return this.#deadline
  }

  #arm (ms: number): void {
    this.#deadline = Date.now() + ms
    this.#timer = setTimeout(fireWatchdog, ms, this)
  }

  onClose (fn: () => void): this {
    if (typeof fn !== 'function') throw new InvalidArgumentError('reply.onClose() takes a function')
    if (this.#state === OPEN) {
      this.#closeListeners ??= []
      this.#closeListeners.push(fn)
    }
    return this
  }

  onEnd (fn: (outcome: Outcome) => void): this {
    if (typeof fn !== 'function') throw new InvalidArgumentError('reply.onEnd() takes a function')
    if (this.#state === OPEN) {
      (this.#endListeners ??= []).push(fn)
    } else {
      this.#runListener(fn, outcomeOf(this.#state, this.#timedOut), 'onEnd')
    }
    return this
  }

  // ---- used by the route, the upstream side (ReplyPort) and the registry (Tracked) ----

  /** The handler (or `onUpstreamError`) returned or settled: a sign of life. */
  settle (): void {
    this.#handlerSettled = true
    this.#lastActivity = Date.now()
  }

  track (call: UpstreamCall): void {
    this.#calls ??= new Set()
    this.#calls.add(call)
  }

  untrack (call: UpstreamCall): void {
    this.#calls?.delete(call)
    this.#lastActivity = Date.now()
  }

  relayed (bytes: number): void {
    this.#bytesWritten += bytes
  }

  /** The client left before the reply was finished. */
  clientGone (): void {
    if (this.#state !== OPEN) return
    // nginx's 499: worth a line, not an alarm.
    this.request.log.info('the client closed the connection before the reply was finished')
    const listeners = this.#closeListeners
    this.#closeListeners = null
    this.#end(ABORTED, new ClientGoneError())
    if (listeners === null) return
    for (const fn of listeners) this.#runListener(fn, undefined, 'onClose')
  }

  /** Ends the reply for a failure the handler did not report itself (throw, upstream error). */
  failByPlugin (error: unknown): void {
    this.#failWith(error, FAILED_BY_PLUGIN)
  }

  endForClose (): void {
    this.#failWith(new ClosingError(), CLOSED)
  }

  /** The watchdog fired. */
  timeOut (): void {
    this.#timer = null
    this.#deadline = Infinity
    this.#timedOut = true
    const now = Date.now()
    const report = hangReport(this, now)
    const log = this.request.log
    log.warn({ report }, describeHang(report, now - this.#lastActivity))
    if (timeoutChannel.hasSubscribers) timeoutChannel.publish({ request: this.request, report })
    const onWatchdog = this.route.onWatchdog
    if (onWatchdog !== null) {
      try {
        onWatchdog(this.request, this, report)
      } catch (error) {
        log.error({ err: error }, 'onTimeout threw')
      }
      if (this.#state !== OPEN) return
    }
    this.#failWith(new TimeoutError(report.elapsedMs), TIMED_OUT)
  }

  hangReport (now: number): HangReport {
    return hangReport(this, now)
  }

  pendingEntry (now: number): PendingReply {
    return pendingEntry(this, now)
  }

  checkIdle (now: number): void {
    const ms = this.route.warnUnfinished
    if (ms === 0 || this.#warnedIdle || !this.#handlerSettled || (this.#calls !== null && this.#calls.size > 0)) return
    const quiet = now - this.#lastActivity
    if (quiet < ms) return
    this.#warnedIdle = true
    this.request.log.warn({ report: hangReport(this, now) }, describeIdle(quiet))
  }

  /** Sends the head of a piped upstream response: base headers, upstream's, then the handler's. */
  writeUpstreamHead (statusCode: number, upstreamHeaders: OutgoingHttpHeaders): void {
    this.#writeHead(statusCode, undefined, undefined, upstreamHeaders)
  }

  /** A piped body ended: the response is complete. */
  finishPiped (): void {
    if (this.#state !== OPEN) return
    if (this.#endsConnection) closeConnectionAfter(this.raw)
    this.raw.end()
    this.#end(FINISHED, undefined)
  }

  // ---- internals ----

  /** Ends the reply with an error answer, or cuts the connection if the head is out. */
  #failWith (error: unknown, state: typeof FAILED_BY_PLUGIN | typeof FAILED_BY_HANDLER | typeof TIMED_OUT | typeof CLOSED): void {
    if (this.#state !== OPEN) {
      this.request.log.debug({ err: error }, 'async reply already ended; error ignored')
      return
    }
    const answer = errorAnswer(error)
    this.#end(state, answer.error)
    logAnswer(this.request.log, answer)
    const raw = this.raw
    const http2 = this.route.plugin.http2
    if (raw.headersSent || isGone(raw, http2)) {
      cut(raw, http2)
      return
    }
    try {
      // The answer is JSON whatever content type the handler had set for its own body.
      this.#writeHead(answer.status, JSON_TYPE, Buffer.byteLength(answer.body), undefined, true)
      raw.end(answer.body)
    } catch (headError) {
      // A header Node refuses (set unchecked on the Fastify reply by a hook, say): this runs
      // from timers and callbacks, where a throw would crash the process. Cut instead.
      this.request.log.error({ err: headError }, 'async reply: the error answer could not be sent')
      cut(raw, http2)
    }
  }

  #headIsOut (method: string): boolean {
    if (!this.raw.headersSent) return false
    this.request.log.warn(`reply.${method}() ignored: the response head was already sent`)
    return true
  }

  #writeHead (statusCode: number, contentType: string | undefined, length: number | undefined, upstream?: OutgoingHttpHeaders, forceType = false): void {
    // Headers set on the Fastify reply before the handler ran are the base; Fastify itself
    // would drop them after hijack().
    const headers = this.#fastifyReply.getHeaders()
    if (upstream !== undefined) Object.assign(headers, upstream)
    if (this.#head !== null) Object.assign(headers, this.#head)
    if (contentType !== undefined && (forceType || headers['content-type'] === undefined)) headers['content-type'] = contentType
    if (length !== undefined) headers['content-length'] = length
    if (this.#endsConnection) headers.connection = 'close'
    this.raw.writeHead(statusCode, headers as OutgoingHttpHeaders)
  }

  /**
   * While the app closes, a reply also ends its HTTP/1 connection, so that a keep-alive
   * socket cannot hold close() open. (HTTP/2 sessions are closed by Fastify itself.)
   */
  get #endsConnection (): boolean {
    return this.route.plugin.registry.closing && !this.route.plugin.http2
  }

  /** A late call of a public method: a warning if the handler itself had ended the reply. */
  #late (method: string): void {
    const log = this.request.log
    if ((this.#state === FINISHED || this.#state === FAILED_BY_HANDLER) && !this.#timedOut) {
      log.warn(`reply.${method}() called after the reply was already ended by the handler; ignored`)
    } else {
      log.debug(`reply.${method}() called after the reply ended; ignored`)
    }
  }

  #abnormal (): boolean {
    return this.#state !== FINISHED || this.#timedOut
  }

  /** The one place where a reply ends. Every way out goes through here, exactly once. */
  #end (state: Exclude<EndState, typeof OPEN>, reason: unknown): void {
    // onTimeout answered with finish(): the reply still ended because the watchdog fired, and
    // its signal says so like every other timed-out reply's.
    if (reason === undefined && this.#timedOut) reason = new TimeoutError(Date.now() - this.startedAt)
    this.#state = state
    this.#reason = reason
    if (this.#timer !== null) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    this.#deadline = Infinity
    const abnormal = this.#abnormal()
    if (abnormal && this.#controller !== null) this.#controller.abort(reason)
    if (this.#calls !== null) {
      for (const call of this.#calls) call.release(abnormal)
    }
    const outcome = outcomeOf(state, this.#timedOut)
    this.route.plugin.registry.end(this, outcome)
    const listeners = this.#endListeners
    if (listeners === null) return
    this.#endListeners = null
    for (const fn of listeners) this.#runListener(fn, outcome, 'onEnd')
  }

  /** Runs a user's onClose/onEnd callback: a throw is logged, never raised. */
  #runListener (fn: (outcome: Outcome) => void, outcome: Outcome | undefined, name: string): void {
    try {
      fn(outcome as Outcome)
    } catch (error) {
      this.request.log.error({ err: error }, `reply.${name}() callback threw`)
    }
  }
}

function outcomeOf (state: EndState, timedOut: boolean): Outcome {
  if (timedOut || state === TIMED_OUT) return 'timedOut'
  if (state === FINISHED) return 'finished'
  if (state === ABORTED) return 'aborted'
  return 'failed'
}

function fireWatchdog (reply: AsyncReplyImpl): void {
  reply.timeOut()
}

function onRawClose (this: RawWithReply): void {
  // `close` after a complete response is the normal end of the exchange, not a client abort.
  // (`writableEnded`, not `writableFinished`: an HTTP/2 stream the client cancelled reports
  // itself finished.)
  if (!this.writableEnded) this[kReply]?.clientGone()
}
