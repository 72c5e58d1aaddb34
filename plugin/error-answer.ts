// The answer a failed reply sends: Fastify's default error shape, never a stack trace or an
// upstream's address, and the log line that goes with it.
import { STATUS_CODES } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import { isUpstreamFailure, toUpstreamError } from './error-mapping.js'

export interface ErrorAnswer {
  readonly error: Error
  readonly status: number
  /** The error's message, read once, as text: what the body and the log line say. */
  readonly message: string
  /** `{ statusCode, code, error, message }` as JSON. */
  readonly body: string
}

function asError (error: unknown): Error {
  if (isUpstreamFailure(error)) return toUpstreamError(error)
  if (error instanceof Error) return error
  return new Error(String(error))
}

/** `error.statusCode` (or `status`) when it is 4xx/5xx, else 500 — as Fastify's default handler. */
function statusOf (error: Error): number {
  const { statusCode, status } = error as { statusCode?: unknown, status?: unknown }
  const value = statusCode ?? status
  return typeof value === 'number' && Number.isInteger(value) && value >= 400 && value <= 599 ? value : 500
}

/**
 * The answer for whatever a handler threw or failed with. Never throws: a value it cannot read
 * (no prototype, a getter or `toString` that throws, a Proxy) is answered as a plain 500 whose
 * `cause` is what reading it threw. The message is read once, as text.
 */
export function errorAnswer (thrown: unknown): ErrorAnswer {
  try {
    const error = asError(thrown)
    const status = statusOf(error)
    const code = (error as { code?: unknown }).code
    const read: unknown = error.message
    const message = typeof read === 'string' ? read : String(read)
    const body = JSON.stringify({
      statusCode: status,
      code: typeof code === 'string' ? code : undefined,
      error: STATUS_CODES[status],
      message
    })
    return { error, status, message, body }
  } catch (readError) {
    const error = new Error(UNREADABLE, { cause: readError })
    return { error, status: 500, message: UNREADABLE, body: UNREADABLE_BODY }
  }
}

const UNREADABLE = 'The error could not be read'
const UNREADABLE_BODY = JSON.stringify({ statusCode: 500, error: STATUS_CODES[500], message: UNREADABLE })

// What the app's `renderError` did with an error answer.
/** It finished the reply. */
export const RENDERED = 0
/** It threw (logged already): the default answer goes out. */
export const NOT_RENDERED = 1
/** It returned without finishing: the default answer goes out, then `warnRenderUnfinished`. */
export const LEFT_UNFINISHED = 2
export type Rendering = typeof RENDERED | typeof NOT_RENDERED | typeof LEFT_UNFINISHED

/** Logged once the default answer is out (a logger that throws leaves no client waiting). */
export function warnRenderUnfinished (log: FastifyBaseLogger): void {
  log.warn('renderError did not finish the reply; the default error answer is sent')
}

/** 5xx at error level, the rest at info: a client's mistake is not the server's alarm. */
export function logAnswer (log: FastifyBaseLogger, answer: ErrorAnswer): void {
  logError(log, answer.status >= 500 ? 'error' : 'info', answer.error, answer.message)
}

/**
 * Logs `error` under `err`. Never throws: an error the logger cannot serialise (pino's
 * serialiser throws on a frozen error, or on a getter that throws) is logged as its
 * description instead.
 */
export function logError (log: FastifyBaseLogger, level: 'error' | 'info' | 'debug', error: unknown, message: string): void {
  try {
    log[level]({ err: error }, message)
  } catch {
    log[level]({ err: new Error(describe(error)) }, message)
  }
}

function describe (value: unknown): string {
  try {
    return `${String(value)} (not serialisable)`
  } catch {
    return 'an unreadable value'
  }
}
