// The watchdogs of one route: every reply armed with the route's own timeout waits in one
// queue with one timer, instead of a timer per reply. They share a duration, and a reply joins
// when its handler returns, in the same synchronous call that started it, so the order they
// join in is the order they are due in: the timer only ever waits for the oldest. (A reply
// finished inside its handler never joins; one re-armed with `setTimeout(ms)`, or shortened by
// `deadlineHeader`, has its own timer.) The timer is not cleared when the queue empties: a
// reply that waits only briefly would otherwise cost a setTimeout and a clearTimeout each. It holds the process open only
// while replies wait on it (ref'd then, unref'd when the queue empties), so `app.inject()` of a
// long poll gets its answer, and a timer with nothing left to watch holds neither the process
// nor `app.close()`; it fires once, finds the queue empty and stops.
// The timer was created in the async context of whichever reply armed it first: each reply's
// watchdog runs in that reply's own context (`asyncContext`), never in the timer's.
import type { AsyncResource } from 'node:async_hooks'
import { kAsyncContext, kDeadline, kQueueNext, kQueuePrev, kWatchdogFired } from './symbols.js'

/** A reply as the queue sees it. */
export interface Watched {
  /**
   * Its neighbours in the queue, written by the queue alone. A queue threaded through the
   * replies costs no allocation; a Set, emptied and filled again about once a request on a
   * route answering one request at a time, got a new table from V8 each time.
   */
  [kQueuePrev]: Watched | null
  [kQueueNext]: Watched | null
  /** When its watchdog fires (epoch ms). */
  readonly [kDeadline]: number
  /** The async context of the request the reply answers. */
  readonly [kAsyncContext]: AsyncResource
  /** Its watchdog fired; it left the queue. */
  [kWatchdogFired] (): void
}

export class WatchdogQueue {
  /** Waiting replies in due order, oldest first (a list through their kQueuePrev and kQueueNext). */
  #first: Watched | null = null
  #last: Watched | null = null
  #timer: NodeJS.Timeout | null = null

  add (reply: Watched): void {
    const last = this.#last
    reply[kQueuePrev] = last
    if (last === null) this.#first = reply
    else last[kQueueNext] = reply
    this.#last = reply
    // (Due from its start, not from now: its handler ran in between.)
    if (this.#timer === null) this.#timer = setTimeout(fire, Math.max(1, reply[kDeadline] - Date.now()), this)
    else if (last === null) this.#timer.ref()
  }

  /** A waiting reply leaves; one that is not in the queue (never added, or gone) changes nothing. */
  delete (reply: Watched): void {
    // (Unlinking a reply that is not in the queue would cut the queue at its head. Its clock
    // calls this only for a reply in the queue: the queue does not count on it.)
    if (reply[kQueuePrev] === null && this.#first !== reply) return
    this.#unlink(reply)
    // (A reply was waiting, so there is a timer: the one that is firing, if this runs from fire().)
    if (this.#first === null) (this.#timer as NodeJS.Timeout).unref()
  }

  /** Fires every reply that is due, then waits for the next one. */
  fire (): void {
    const now = Date.now()
    try {
      // (The first reply is read again after each: what a watchdog runs may end other replies.)
      for (let reply = this.#first; reply !== null && reply[kDeadline] <= now; reply = this.#first) {
        this.#unlink(reply)
        reply[kAsyncContext].runInAsyncScope(reply[kWatchdogFired], reply)
      }
    } finally {
      // Timed for the next reply due, also after a watchdog that threw (the app's logger, say):
      // the error goes on to the process, and the replies still waiting keep their watchdogs.
      const first = this.#first
      this.#timer = first === null ? null : setTimeout(fire, Math.max(1, first[kDeadline] - Date.now()), this)
    }
  }

  #unlink (reply: Watched): void {
    const prev = reply[kQueuePrev]
    const next = reply[kQueueNext]
    if (prev === null) this.#first = next
    else prev[kQueueNext] = next
    if (next === null) this.#last = prev
    else next[kQueuePrev] = prev
    reply[kQueuePrev] = null
    reply[kQueueNext] = null
  }
}

function fire (queue: WatchdogQueue): void {
  queue.fire()
}
