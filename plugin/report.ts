// What the plugin says about an open reply: the hang report (watchdog), the `pending()` entry
// and the one-line description a person reads in the log. One builder for all of them.
import type { FastifyRequest } from 'fastify'
import type { HangReport, InflightReport, InflightState, PendingReply } from './types.js'
import { safeUrl } from './target.js'
import type { UpstreamCall } from './reply-port.js'
import { kBytesWritten, kCalls, kHandlerSettled, kStartedAt } from './symbols.js'

/** How `describeHang` says each state, after the call's age. */
const STATE_WORDS: Readonly<Record<InflightState, string>> = {
  queued: 'queued for a connection',
  sent: 'sent, no answer yet',
  receiving: 'receiving the body',
  'retry-wait': 'waiting to retry'
}

/** What a report is made of; the reply fills it in. */
export interface ReplyFacts {
  readonly request: FastifyRequest
  readonly [kStartedAt]: number
  readonly [kHandlerSettled]: boolean
  readonly headersSent: boolean
  readonly [kBytesWritten]: number
  readonly [kCalls]: readonly UpstreamCall[] | null
}

function describeCalls (calls: readonly UpstreamCall[] | null, now: number): InflightReport[] {
  const list: InflightReport[] = []
  if (calls !== null) {
    for (const call of calls) {
      const entry: InflightReport = { method: call.method, url: safeUrl(call.url), ageMs: now - call.startedAt }
      // Only when known: no `state: undefined` key.
      const state = call.state
      if (state !== undefined) entry.state = state
      list.push(entry)
    }
  }
  return list
}

export function hangReport (facts: ReplyFacts, now: number): HangReport {
  const { request } = facts
  return {
    id: request.id,
    method: request.method,
    url: request.url,
    elapsedMs: now - facts[kStartedAt],
    handlerSettled: facts[kHandlerSettled],
    headersSent: facts.headersSent,
    bytesWritten: facts[kBytesWritten],
    inflight: describeCalls(facts[kCalls], now)
  }
}

/** A reply as `pending()` lists it: its hang report, with its age and without the byte count. */
export function pendingEntry (facts: ReplyFacts, now: number): PendingReply {
  const { elapsedMs, bytesWritten, ...entry } = hangReport(facts, now)
  return { ...entry, ageMs: elapsedMs }
}

/**
 * One line for a person reading the log at 3 a.m.: where did this reply hang?
 * `quietMs`: time since the reply's last sign of life (a write, an upstream answer).
 */
export function describeHang (report: HangReport, quietMs: number): string {
  const { inflight } = report
  let where: string
  if (inflight.length > 0) {
    const waits = inflight.map((request) => `${request.method} ${request.url} (${request.ageMs} ms${request.state === undefined ? '' : `, ${STATE_WORDS[request.state]}`})`)
    where = `waiting on upstream ${waits.join(', ')}`
  } else if (report.bytesWritten > 0) {
    where = `streaming: ${report.bytesWritten} bytes written, the last ${quietMs} ms ago`
  } else if (report.handlerSettled) {
    where = 'the handler returned and nothing is in flight: was reply.finish() forgotten?'
  } else {
    where = 'the handler is still running'
  }
  const head = report.headersSent ? 'head already sent' : 'head not sent'
  return `async reply not finished after ${report.elapsedMs} ms (${head}); ${where}`
}

/** Why `idleTimeout` ended a reply, and what it was doing. */
export function describeSilence (report: HangReport, quietMs: number): string {
  const { inflight } = report
  const doing = inflight.length > 0
    ? `waiting on upstream ${inflight.map((request) => `${request.method} ${request.url}`).join(', ')}`
    : report.bytesWritten > 0 ? `after ${report.bytesWritten} bytes written` : 'nothing written'
  return `async reply idle for ${quietMs} ms (idleTimeout), ${doing}; ${report.elapsedMs} ms since it started`
}

/** The "did you forget finish()?" hint of `warnUnfinished`. */
export function describeUnfinished (quietMs: number): string {
  return `async reply idle for ${quietMs} ms after its handler returned, with nothing in flight: did you forget reply.finish()?`
}
