// The watchdog's timer and the hang report it writes when a reply was never finished.
import type { HangReport, InflightReport } from './types.js'

/** Node fires a timer longer than this after 1 ms; every duration option is checked against it. */
export const MAX_TIMER_MS = 2_147_483_647

/** An upstream request that a reply is waiting on (headers or body). */
export interface InflightRequest {
  readonly method: string
  readonly url: string | URL
  readonly startedAt: number
}

/** An upstream request a reply waits on; the reply releases it when it ends. */
export interface Releasable extends InflightRequest {
  /** The reply ended (`abnormal`: any way but finish()/pipe() completing). */
  release (abnormal: boolean): void
}

/** The upstream URL as it may appear in logs and reports: without user:password. */
export function safeUrl (url: string | URL): string {
  const text = String(url)
  if (!text.includes('@')) return text
  try {
    const parsed = new URL(text)
    parsed.username = ''
    parsed.password = ''
    return parsed.href
  } catch {
    return '[invalid url]'
  }
}

export function describeInflight (inflight: ReadonlySet<InflightRequest> | null, now: number): InflightReport[] {
  const list: InflightReport[] = []
  if (inflight !== null) {
    for (const request of inflight) {
      list.push({ method: request.method, url: safeUrl(request.url), ageMs: now - request.startedAt })
    }
  }
  return list
}

/**
 * One line for a person reading the log at 3 a.m.: where did this reply hang?
 * `quietMs`: time since the reply's last sign of life (a write, an upstream answer).
 */
export function describeHang (report: HangReport, quietMs: number): string {
  const { inflight } = report
  let where: string
  if (inflight.length > 0) {
    const waits = inflight.map((request) => `${request.method} ${request.url} (${request.ageMs} ms)`)
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

/** Validates a duration given at run time (`reply.setTimeout`, route `timeout`). */
export function checkDuration (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new TypeError(`${name} must be an integer from 0 to ${MAX_TIMER_MS} (ms), got ${String(value)}`)
  }
  return value
}
