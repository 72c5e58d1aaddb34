// The answer a failed reply sends: Fastify's default error shape, never a stack trace or an
// upstream's address, and the log line that goes with it.
import { STATUS_CODES } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import { isUpstreamFailure, toUpstreamError } from './error-mapping.js'

export interface ErrorAnswer {
  readonly error: Error
  readonly status: number
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

export function errorAnswer (thrown: unknown): ErrorAnswer {
  const error = asError(thrown)
  const status = statusOf(error)
  const code = (error as { code?: unknown }).code
  const body = JSON.stringify({
    statusCode: status,
    code: typeof code === 'string' ? code : undefined,
    error: STATUS_CODES[status],
    message: error.message
  })
  return { error, status, body }
}

/** 5xx at error level, the rest at info: a client's mistake is not the server's alarm. */
export function logAnswer (log: FastifyBaseLogger, answer: ErrorAnswer): void {
  if (answer.status >= 500) {
    log.error({ err: answer.error }, answer.error.message)
  } else {
    log.info({ err: answer.error }, answer.error.message)
  }
}
