// Everything the plugin knows about undici's interfaces, in one file: how a request is handed
// to a dispatcher, the handler API a streaming request implements, and the signal undici
// listens to. It speaks the current handler API (`onRequestStart` … `onResponseError`, with a
// controller), which undici 7 and undici 8 dispatchers both accept, and always calls a
// dispatcher through its own methods, so that a dispatcher of either major (composed with
// interceptors or not) gets requests it understands. The next undici major is a change here.
// test/unit/undici-contract.test.ts fails loudly when an undici release breaks what this relies on.
import type { IncomingHttpHeaders } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, Dispatcher } from 'undici'
import type { UpstreamResponse } from './types.js'

export type { Dispatcher }

/** The plugin's own dispatcher, when the user passes none. */
export function createDispatcher (): Dispatcher {
  return new Agent()
}

/** How long `close()` gives the plugin's own dispatcher to close politely before destroying it. */
const DISPATCHER_CLOSE_MS = 500

/** Requests still running on the plugin's own Agent (typically an unread body being drained). */
function busy (agent: Agent): boolean {
  for (const stats of Object.values(agent.stats)) {
    if (stats.running > 0 || stats.pending > 0) return true
  }
  return false
}

/** Closes the plugin's own Agent on `app.close()`. */
export async function closeOwnDispatcher (dispatcher: Dispatcher): Promise<void> {
  // undici's Agent forgets its pools as soon as close() starts, so a destroy() after a close()
  // that hangs reaches nothing and leaves the upstream sockets open. Wait briefly for running
  // requests instead, then close politely, or destroy while the pools are still reachable.
  const agent = dispatcher as Agent
  const deadline = Date.now() + DISPATCHER_CLOSE_MS
  while (busy(agent) && Date.now() < deadline) await sleep(10)
  if (busy(agent)) {
    await agent.destroy()
  } else {
    await agent.close()
  }
}

/** undici's response body: a Readable with `dump()`, `text()`, `json()`… */
export type ResponseBody = UpstreamResponse['body']

/** What `dispatch` and `request` take: undici's request options with the origin and path split out. */
export type DispatchOptions = Dispatcher.DispatchOptions & Record<string, unknown>

type RequestCallback = (error: Error | null, response: UpstreamResponse | undefined) => void
type RequestMethod = (this: Dispatcher, options: object, callback: RequestCallback) => void

/**
 * undici 7's `Dispatcher#request`, for a dispatcher that has `dispatch` but no `request` of
 * its own (a hand-written one): it builds an undici 7 handler, which such a dispatcher (built
 * on undici 7, or wrapping one) understands.
 */
const fallbackRequest = Dispatcher.prototype.request as unknown as RequestMethod

/**
 * `dispatcher.request(options, callback)` through the dispatcher's own method: undici 7's
 * `request()` would hand an undici 8 dispatcher a handler it refuses. Errors come through
 * `callback`, also those undici throws synchronously.
 */
export function sendRequest (dispatcher: Dispatcher, options: DispatchOptions, callback: RequestCallback): void {
  const own = (dispatcher as { request?: unknown }).request
  const request = typeof own === 'function' ? own as RequestMethod : fallbackRequest
  try {
    request.call(dispatcher, options, callback)
  } catch (error) {
    callback(error as Error, undefined)
  }
}

function noop (): void {}

/**
 * Reads what is left of a body nobody wants (up to undici's `dump()` limit, then its socket is
 * given up), so that a keep-alive connection goes back to its pool. Its errors are nobody's.
 */
export function discardBody (body: ResponseBody): void {
  body.on('error', noop)
  body.dump().catch(noop)
}

/** What owns a body it hands on (`fetch`): told when the body closes and, when it asks, of each chunk. */
export interface BodyOwner {
  bodyChunk (): void
  bodyClosed (): void
}

const kOwner = Symbol('fastify-async-route.bodyOwner')
type OwnedBody = ResponseBody & { [kOwner]: BodyOwner }

/**
 * Ties `body` to `owner`: `bodyClosed()` once it closes (read, destroyed or failed) and, with
 * `chunks`, `bodyChunk()` for each chunk undici hands it, whoever reads it and however (a
 * 'data' listener would start the flow its reader controls): undici delivers every chunk
 * through the body's `push`. An error of a body nobody reads does not crash the process;
 * its readers still see it.
 */
export function adoptBody (body: ResponseBody, owner: BodyOwner, chunks: boolean): void {
  (body as OwnedBody)[kOwner] = owner
  body.on('close', onOwnedClose)
  body.on('error', noop)
  if (chunks) body.push = pushOwned
}

function onOwnedClose (this: OwnedBody): void {
  this[kOwner].bodyClosed()
}

function pushOwned (this: OwnedBody, chunk: unknown, encoding?: BufferEncoding): boolean {
  this[kOwner].bodyChunk()
  return Object.getPrototypeOf(this).push.call(this, chunk, encoding)
}

type AbortListener = () => void

/**
 * A signal undici can listen to, far cheaper than an `AbortController` per request. undici 7
 * listens with `on`/`removeListener` (an EventEmitter's shape), undici 8 through
 * `events.addAbortListener`, which wants `aborted` and `addEventListener`/`removeEventListener`.
 * undici only ever listens for `abort`.
 */
export class RequestSignal {
  #aborted = false
  #listeners: AbortListener[] | null = null

  get aborted (): boolean {
    return this.#aborted
  }

  get reason (): undefined {
    return undefined
  }

  on (_event: 'abort', listener: AbortListener): this {
    (this.#listeners ??= []).push(listener)
    return this
  }

  removeListener (_event: 'abort', listener: AbortListener): this {
    const listeners = this.#listeners
    // (A listener that is not there, -1, becomes an index past the end: nothing is removed.)
    if (listeners !== null) listeners.splice(listeners.indexOf(listener) >>> 0, 1)
    return this
  }

  addEventListener (event: 'abort', listener: AbortListener): void {
    this.on(event, listener)
  }

  removeEventListener (event: 'abort', listener: AbortListener): void {
    this.removeListener(event, listener)
  }

  /** Aborts what undici started with this signal (once). */
  protected abortRequest (): void {
    this.#aborted = true
    const listeners = this.#listeners
    if (listeners === null) return
    this.#listeners = null
    for (const listener of listeners) listener()
  }
}

/**
 * A request whose answer is consumed as it arrives, without a `Readable`: the subclass gets
 * the head, each chunk, the end or the error, and may pause, resume or cancel the request.
 */
export abstract class StreamingRequest implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | null = null
  #cancelled = false
  /** undici started the current try (`onRequestStart`): it was handed to a connection. */
  #started = false

  /** The final response head (1xx informational answers are skipped). */
  protected abstract received (statusCode: number, headers: IncomingHttpHeaders): void
  /** A body chunk; `false` pauses the request until `resume()`. */
  protected abstract chunk (chunk: Buffer): boolean
  protected abstract completed (): void
  /** The request failed, or was cancelled (then `error` is undici's abort error). */
  protected abstract failed (error: Error): void

  /** Stops the request (now, or as soon as undici starts it). */
  protected cancel (): void {
    this.#cancelled = true
    this.#controller?.abort(new Error('cancelled'))
  }

  /** Gives up the current try only (its answer is not wanted); a later dispatch of this request is not affected. */
  protected abandon (): void {
    this.#controller?.abort(new Error('abandoned'))
  }

  /**
   * Pauses the request from outside `chunk()`: no more chunks until `resume()` (undici may
   * still hand on the chunk it is delivering).
   */
  pause (): void {
    this.#controller?.pause()
  }

  /** Resumes a request paused by `chunk()` returning false, or by `pause()`. */
  resume (): void {
    this.#controller?.resume()
  }

  /**
   * Whether undici has handed the current try to a connection (`onRequestStart`, which a pool
   * calls when it writes the request). Until then the request waits in its pool's queue, or
   * for its connection to be made.
   */
  protected get started (): boolean {
    return this.#started
  }

  /** Dispatches this request on `dispatcher`; an error it throws is reported through `failed`. */
  dispatchOn (dispatcher: Dispatcher, options: DispatchOptions): void {
    this.#started = false
    try {
      dispatcher.dispatch(options, this)
    } catch (error) {
      this.failed(error as Error)
    }
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    this.#started = true
    if (this.#cancelled) controller.abort(new Error('cancelled'))
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode >= 200) this.received(statusCode, headers)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.chunk(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.completed()
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
    this.failed(error)
  }
}
