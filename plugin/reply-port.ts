// The narrow view of a reply that the upstream side (fetch, pipe, the checks before a request)
// works through. It has no `raw`: the reply alone writes the response, the upstream side hands
// it what to relay. The reply implements it; nothing on the upstream side imports the reply.
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { PluginContext } from './context.js'
import type { ResolvedRetry } from './retry-policy.js'
import type { InflightState, RewriteHeaders } from './types.js'
import { kDeadline, kEndReason, kFailByPlugin, kNoteSignOfLife, kOpen, kPlugin, kRelayChunk, kRelayEnd, kRelayHead, kRetry, kTrack, kUntrack, kWatchesIdle } from './symbols.js'

export interface ReplyPort {
  readonly request: FastifyRequest
  readonly [kPlugin]: PluginContext
  /** Not ended in any way yet. */
  readonly [kOpen]: boolean
  /** Epoch ms when the watchdog fires; `Infinity` while it is disarmed. A retry never starts after it. */
  readonly [kDeadline]: number
  /** The route's retry policy (the plugin's with the route's laid over it). */
  readonly [kRetry]: ResolvedRetry
  /** How the reply ended, for a request it cancelled. */
  readonly [kEndReason]: unknown
  /** Counts the call as in flight until `untrack` (or releases it when the reply ends). */
  [kTrack] (call: UpstreamCall): void
  /** The call is over (its body read, released or failed): a sign of life too. */
  [kUntrack] (call: UpstreamCall): void
  /** An upstream head or body chunk arrived (for `fetch`): a sign of life for `idleTimeout`. */
  [kNoteSignOfLife] (): void
  /** `idleTimeout` is on for this reply: only then are upstream chunks worth a timestamp. */
  readonly [kWatchesIdle]: boolean
  // The reply writes the response; the upstream side hands it what to relay.
  /** Relays an upstream head; false when no body is to follow (HEAD answered, or a bad head answered 502). */
  [kRelayHead] (statusCode: number, upstreamHeaders: IncomingHttpHeaders, rewrite: RewriteHeaders | null): boolean
  /**
   * Relays a body chunk (counted, a sign of life). False: the source is to pause now; the reply
   * calls `source.resume()` once the client drained. (It may also pause the source itself,
   * later in the tick, and resume it the same way.)
   */
  [kRelayChunk] (chunk: Buffer, source: RelaySource): boolean
  /** The relayed body ended: the response is complete. */
  [kRelayEnd] (): void
  /** Ends the reply for a failure of the plugin's own (an upstream error): the error answer, or a cut. */
  [kFailByPlugin] (error: unknown): void
}

/** What relays a body: paused by backpressure, resumed by the reply once the client drained. */
export interface RelaySource {
  pause (): unknown
  resume (): unknown
}

/**
 * An upstream request a reply is waiting on, from the call until its body was read or
 * released: a `fetch`, a `pipe(url)`. The reply releases it when it ends.
 */
export interface UpstreamCall {
  readonly method: string
  readonly url: string | URL
  readonly startedAt: number
  /** Where the call is (read only when a report is built); `undefined` when the call cannot tell. */
  readonly state: InflightState | undefined
  /** The reply ended (`abnormal`: any way but finish()/pipe() completing). */
  release (abnormal: boolean): void
}
