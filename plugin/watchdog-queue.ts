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
import { kAsyncContext, kDeadline, kWatchdogFired } from './symbols.js'

/** A reply as the queue sees it. */
export interface Watched {
  /** When its watchdog fires (epoch ms). */
  readonly [kDeadline]: number
  /** The async context of the request the reply answers. */
  readonly [kAsyncContext]: AsyncResource
  /** Its watchdog fired; it left the queue. */
  [kWatchdogFired] (): void
}

export class WatchdogQueue {
  /** Insertion order is due order; a Set's delete is O(1) and iteration skips what was deleted. */
  readonly #waiting = new Set<Watched>()
  #timer: NodeJS.Timeout | null = null

  add (reply: Watched): void {
    this.#waiting.add(reply)
    // (Due from its start, not from now: its handler ran in between.)
    if (this.#timer === null) this.#timer = setTimeout(fire, Math.max(1, reply[kDeadline] - Date.now()), this)
    else if (this.#waiting.size === 1) this.#timer.ref()
  }

  delete (reply: Watched): void {
    this.#waiting.delete(reply)
    // (A reply was waiting, so there is a timer: the one that is firing, if this runs from fire().)
    if (this.#waiting.size === 0) (this.#timer as NodeJS.Timeout).unref()
  }

  /** Fires every reply that is due, then waits for the next one. */
  fire (): void {
    const now = Date.now()
    for (const reply of this.#waiting) {
      if (reply[kDeadline] > now) {
        this.#timer = setTimeout(fire, reply[kDeadline] - now, this)
        return
      }
      this.#waiting.delete(reply)
      reply[kAsyncContext].runInAsyncScope(reply[kWatchdogFired], reply)
    }
    this.#timer = null
  }
}

function fire (queue: WatchdogQueue): void {
  queue.fire()
}
