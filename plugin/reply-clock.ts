// A reply's time: when it started, its one "last sign of life" clock, and the three things
// that watch it — the watchdog (`timeout`, `reply.setTimeout()`), `idleTimeout` (silence) and
// `warnUnfinished` (the "did you forget finish()?" hint). The reply (reply.ts) extends this
// class: it stamps the clock, and it decides what running out of time does to the response.
//
// The clock is stamped by every sign of life: a write, a flush, an upstream head or body chunk
// (the chunks only while `idleTimeout` watches: nothing else reads the clock while a request is
// in flight), an upstream request ending, the handler settling. `idleTimeout` ends a reply
// whose clock stood still that long; `warnUnfinished` warns of one whose handler settled, with
// nothing in flight, whose clock stood still that long.
import type { AsyncResource } from 'node:async_hooks'
import type { FastifyRequest } from 'fastify'
import type { RouteContext } from './context.js'
import { IdleTimeoutError, TimeoutError } from './errors.js'
import { describeHang, describeSilence, describeUnfinished } from './report.js'
import type { HangReport } from './types.js'
import type { Watched, WatchdogQueue } from './watchdog-queue.js'
import { kAsyncContext, kAwaitingFinish, kCheckUnfinished, kDeadline, kEnqueueWatchdog, kHangReport, kIdleTimerFired, kNoteSignOfLife, kQueueNext, kQueuePrev, kRanOut, kRearmWatchdog, kRoute, kStartClock, kStartedAt, kStopClock, kWatchdogFired, kWatchesIdle } from './symbols.js'

// A reply armed with its route's own timeout is due from its start, and joins the route's
// WatchdogQueue only if its handler returns with it open (kEnqueueWatchdog).
const NOT_QUEUED = 0
const JOINS_ON_RETURN = 1
const QUEUED = 2
type QueueState = typeof NOT_QUEUED | typeof JOINS_ON_RETURN | typeof QUEUED

export abstract class ReplyClock {
  readonly [kStartedAt] = Date.now()
  abstract readonly [kRoute]: RouteContext
  /** The async context of the request: each timer's work for the reply runs in it. */
  abstract readonly [kAsyncContext]: AsyncResource
  /** The last sign of life (epoch ms). */
  #lastActivity = this[kStartedAt]
  /** When the watchdog fires (epoch ms); `Infinity` while it is off. */
  #dueAt = Infinity
  /** The watchdog's own timer, when the reply is not in its route's WatchdogQueue. */
  #timer: NodeJS.Timeout | null = null
  /** Where the route's WatchdogQueue stands for this reply (armed with the route's own timeout). */
  #inQueue: QueueState = NOT_QUEUED
  /** The `idleTimeout` timer, re-armed only when it fires early (never per sign of life). */
  #idleTimer: NodeJS.Timeout | null = null
  #warnedUnfinished = false
  /**
   * Its neighbours in the route's WatchdogQueue, which only the queue sets (through the
   * accessors below). Private, so that a reply logged or inspected shows no other request.
   */
  #queuePrev: Watched | null = null
  #queueNext: Watched | null = null

  abstract readonly request: FastifyRequest
  /** The hang report as of `now`. */
  abstract [kHangReport] (now: number): HangReport
  /** The handler settled and no upstream request is in flight: only then can `finish()` have been forgotten. */
  abstract get [kAwaitingFinish] (): boolean
  /**
   * The watchdog or `idleTimeout` ran out (it is off from now on): what the reply does about
   * it, given the report, the line to log and the error to end with.
   */
  abstract [kRanOut] (report: HangReport, message: string, error: Error & { code: string }): void

  /**
   * Arms the watchdog with the route's timeout (or `timeout` ms) and `idleTimeout`. With the
   * route's own timeout the reply is due from now, and joins the route's queue only if its
   * handler returns with it open (kEnqueueWatchdog).
   */
  [kStartClock] (timeout: number): void {
    const route = this[kRoute]
    if (timeout === route.timeout && route.watchdogs !== null) {
      this.#dueAt = this[kStartedAt] + timeout
      this.#inQueue = JOINS_ON_RETURN
    } else if (timeout > 0) {
      this.#arm(timeout)
    }
    if (route.idleTimeout > 0) this.#idleTimer = setTimeout(idleTimerFired, route.idleTimeout, this)
  }

  /** The handler returned with the reply open: it waits in its route's queue from now. */
  [kEnqueueWatchdog] (): void {
    if (this.#inQueue !== JOINS_ON_RETURN) return
    this.#inQueue = QUEUED
    ;(this[kRoute].watchdogs as WatchdogQueue).add(this)
  }

  get [kQueuePrev] (): Watched | null {
    return this.#queuePrev
  }

  set [kQueuePrev] (reply: Watched | null) {
    this.#queuePrev = reply
  }

  get [kQueueNext] (): Watched | null {
    return this.#queueNext
  }

  set [kQueueNext] (reply: Watched | null) {
    this.#queueNext = reply
  }

  /** The reply ended: nothing watches it any more. */
  [kStopClock] (): void {
    this.#disarm()
    if (this.#idleTimer !== null) {
      clearTimeout(this.#idleTimer)
      this.#idleTimer = null
    }
  }

  /** `reply.setTimeout(ms)`: the watchdog from now, `0` turns it off. */
  [kRearmWatchdog] (ms: number): void {
    this.#disarm()
    if (ms > 0) this.#arm(ms)
  }

  /** How long ago the last sign of life was. */
  #quietFor (now: number): number {
    return now - this.#lastActivity
  }

  /** A sign of life (a write, a flush, an upstream head or chunk, …): the clock reads now. */
  [kNoteSignOfLife] (): void {
    this.#lastActivity = Date.now()
  }

  /** `idleTimeout` watches this reply: only then are upstream chunks worth a timestamp. */
  get [kWatchesIdle] (): boolean {
    return this.#idleTimer !== null
  }

  /** When the watchdog fires (epoch ms); `Infinity` while it is off. A retry never starts after it. */
  get [kDeadline] (): number {
    return this.#dueAt
  }

  /** The watchdog fired (from the route's queue or the reply's own timer). */
  [kWatchdogFired] (): void {
    this.#timer = null
    this.#inQueue = NOT_QUEUED
    this.#dueAt = Infinity
    const now = Date.now()
    const report = this[kHangReport](now)
    this[kRanOut](report, describeHang(report, this.#quietFor(now)), new TimeoutError(report.elapsedMs))
  }

  /** The `idleTimeout` timer fired: ends the reply if it stayed silent that long, else re-arms. */
  [kIdleTimerFired] (): void {
    const now = Date.now()
    const idle = this[kRoute].idleTimeout
    const quiet = this.#quietFor(now)
    if (quiet < idle) {
      this.#idleTimer = setTimeout(idleTimerFired, idle - quiet, this)
      return
    }
    this.#idleTimer = null
    const report = this[kHangReport](now)
    this[kRanOut](report, describeSilence(report, quiet), new IdleTimeoutError(quiet))
  }

  /**
   * The registry's sweep for `warnUnfinished` (one timer for every reply): the warning, once,
   * in the reply's own context, for a reply awaiting `finish()` that long.
   */
  [kCheckUnfinished] (now: number): void {
    const ms = this[kRoute].warnUnfinished
    if (ms === 0 || this.#warnedUnfinished || !this[kAwaitingFinish]) return
    const quiet = this.#quietFor(now)
    if (quiet < ms) return
    this.#warnedUnfinished = true
    this[kAsyncContext].runInAsyncScope(this.#warnUnfinished, this, now, quiet)
  }

  #warnUnfinished (now: number, quiet: number): void {
    this.request.log.warn({ report: this[kHangReport](now) }, describeUnfinished(quiet))
  }

  #arm (ms: number): void {
    this.#timer = setTimeout(watchdogFired, ms, this)
    this.#dueAt = Date.now() + ms
  }

  #disarm (): void {
    const inQueue = this.#inQueue
    this.#inQueue = NOT_QUEUED
    if (inQueue === QUEUED) {
      ;(this[kRoute].watchdogs as WatchdogQueue).delete(this)
    } else if (this.#timer !== null) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    this.#dueAt = Infinity
  }
}

// A reply's own timers may have been armed from another request's context (`setTimeout(ms)`
// called by another request's handler): they too run in the reply's context.
function watchdogFired (clock: ReplyClock): void {
  clock[kAsyncContext].runInAsyncScope(clock[kWatchdogFired], clock)
}

function idleTimerFired (clock: ReplyClock): void {
  clock[kAsyncContext].runInAsyncScope(clock[kIdleTimerFired], clock)
}
