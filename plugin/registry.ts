// The replies of one plugin registration that are still open, the counts of how the others
// ended, the diagnostics channels, and the graceful close.
import type { AsyncResource } from 'node:async_hooks'
import diagnostics from 'node:diagnostics_channel'
import type { FastifyRequest } from 'fastify'
import type { AsyncRouteStats, HangReport, PendingReply, ReplyOutcome } from './types.js'
import { kAsyncContext, kCheckUnfinished, kEndForClose, kHangReport, kOpenNext, kOpenPrev, kPendingEntry } from './symbols.js'

export const timeoutChannel = diagnostics.channel('fastify-async-route:timeout')
export const abortChannel = diagnostics.channel('fastify-async-route:abort')
export const finishChannel = diagnostics.channel('fastify-async-route:finish')

/** What the registry needs of a reply. */
export interface Tracked {
  /**
   * Its neighbours in the registry's list of open replies, written by the registry alone: a
   * list threaded through the replies costs no allocation per request, where a Set's entry
   * and the new table it gets once emptied did, every request.
   */
  [kOpenPrev]: Tracked | null
  [kOpenNext]: Tracked | null
  readonly request: FastifyRequest
  /** The async context of the request: what a shared timer does for the reply runs in it. */
  readonly [kAsyncContext]: AsyncResource
  [kPendingEntry] (now: number): PendingReply
  [kHangReport] (now: number): HangReport
  /** Ends the reply because the close grace ran out. */
  [kEndForClose] (): void
  /**
   * Logs the "did you forget finish()?" warning if the reply has been idle for its route's
   * delay (in the reply's own context: the sweep runs for every reply, most of which log nothing).
   */
  [kCheckUnfinished] (now: number): void
}

export class Registry {
  /** Open replies, oldest first (a list through their kOpenPrev and kOpenNext). */
  #first: Tracked | null = null
  #last: Tracked | null = null
  #size = 0
  #started = 0
  #finished = 0
  #timedOut = 0
  #aborted = 0
  #failed = 0
  #rejected = 0
  #closing = false
  #inGrace = false
  #onDrained: (() => void) | null = null
  #unfinishedSweep: NodeJS.Timeout | null = null
  #sweepEvery = Infinity

  get closing (): boolean {
    return this.#closing
  }

  /** close() began and is still waiting for open replies: a new one shares what is left. */
  get inGrace (): boolean {
    return this.#inGrace
  }

  /** Open replies now. */
  get size (): number {
    return this.#size
  }

  /** A request answered `FST_ASYNC_ROUTE_OVERLOADED`: never started, never pending. */
  reject (): void {
    this.#rejected++
  }

  add (reply: Tracked): void {
    this.#started++
    this.#size++
    const last = this.#last
    reply[kOpenPrev] = last
    if (last === null) this.#first = reply
    else last[kOpenNext] = reply
    this.#last = reply
  }

  /** A reply that was added ended (counted once: a second call for it changes nothing). */
  end (reply: Tracked, outcome: ReplyOutcome): void {
    if (!this.#remove(reply)) return
    switch (outcome) {
      case 'finished': this.#finished++; break
      case 'timedOut': this.#timedOut++; break
      case 'aborted': this.#aborted++; break
      default: this.#failed++
    }
    if (outcome === 'finished' && finishChannel.hasSubscribers) {
      finishChannel.publish({ request: reply.request, report: reply[kHangReport](Date.now()) })
    } else if (outcome === 'aborted' && abortChannel.hasSubscribers) {
      abortChannel.publish({ request: reply.request, report: reply[kHangReport](Date.now()) })
    }
    if (this.#onDrained !== null && this.#size === 0) this.#onDrained()
  }

  /** Unlinks an open reply; false when it is not in the list (never added, or removed already). */
  #remove (reply: Tracked): boolean {
    const prev = reply[kOpenPrev]
    // (Unlinking a reply that is not in the list would cut the list at its head.)
    if (prev === null && this.#first !== reply) return false
    const next = reply[kOpenNext]
    this.#size--
    if (prev === null) this.#first = next
    else prev[kOpenNext] = next
    if (next === null) this.#last = prev
    else next[kOpenPrev] = prev
    reply[kOpenPrev] = null
    reply[kOpenNext] = null
    return true
  }

  /** The open replies now, oldest first: a copy, so that what runs for each may end any of them. */
  #openReplies (): Tracked[] {
    const list: Tracked[] = []
    for (let reply = this.#first; reply !== null; reply = reply[kOpenNext]) list.push(reply)
    return list
  }

  /**
   * Ends every reply still open when the grace is over. A throw from one (the app's logger,
   * once its answer is out) leaves none of the others open: the first goes on to the process
   * once all have ended.
   */
  #endOpenReplies (): void {
    let failed = false
    let failure: unknown
    for (const reply of this.#openReplies()) {
      try {
        reply[kAsyncContext].runInAsyncScope(reply[kEndForClose], reply)
      } catch (error) {
        if (!failed) failure = error
        failed = true
      }
    }
    if (failed) throw failure
  }

  pending (): PendingReply[] {
    const now = Date.now()
    const list: PendingReply[] = []
    for (let reply = this.#first; reply !== null; reply = reply[kOpenNext]) list.push(reply[kPendingEntry](now))
    return list
  }

  stats (): AsyncRouteStats {
    return {
      started: this.#started,
      finished: this.#finished,
      timedOut: this.#timedOut,
      aborted: this.#aborted,
      failed: this.#failed,
      rejected: this.#rejected,
      pending: this.#size
    }
  }

  /**
   * Checks open replies for the `warnUnfinished` hint, every quarter of the shortest delay a
   * route asked for (10 ms to 1 s): one timer for the registration, none per reply.
   */
  watchUnfinished (ms: number): void {
    const every = Math.max(10, Math.min(1000, Math.floor(ms / 4)))
    if (every >= this.#sweepEvery || this.#closing) return
    this.#sweepEvery = every
    if (this.#unfinishedSweep !== null) clearInterval(this.#unfinishedSweep)
    this.#unfinishedSweep = setInterval(() => {
      const now = Date.now()
      // (Its next one is read first: the logger is the app's code, and could end this reply.)
      let next: Tracked | null
      for (let reply = this.#first; reply !== null; reply = next) {
        next = reply[kOpenNext]
        reply[kCheckUnfinished](now)
      }
    }, every)
    this.#unfinishedSweep.unref()
  }

  /**
   * Starts the graceful close: waits up to `grace` ms for open replies, then ends the rest.
   * Calls `done` as soon as nothing is open, or after `hookBudget` ms if that comes first:
   * the grace goes on without it (Fastify's server.close() then waits for the connections
   * the pending replies hold), so that a hook time limit shorter than the grace never fails
   * close().
   */
  close (grace: number, hookBudget: number, done: () => void): void {
    this.#closing = true
    if (this.#unfinishedSweep !== null) clearInterval(this.#unfinishedSweep)
    if (this.#size === 0) return done()
    this.#inGrace = true
    let hookTimer: NodeJS.Timeout | null = null
    const release = (): void => {
      if (hookTimer !== null) clearTimeout(hookTimer)
      hookTimer = null
      const callback = done
      done = noop
      callback()
    }
    const graceTimer = setTimeout(() => {
      this.#inGrace = false
      this.#endOpenReplies()
    }, grace)
    if (hookBudget < grace) hookTimer = setTimeout(release, hookBudget)
    this.#onDrained = () => {
      this.#onDrained = null
      this.#inGrace = false
      clearTimeout(graceTimer)
      release()
    }
  }
}

function noop (): void {}
