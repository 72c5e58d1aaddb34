// What the plugin assumes of values the app's own functions return.
import type { FastifyBaseLogger } from 'fastify'
import { logError } from './error-answer.js'

/** A thenable: what an async handler, hook or callback returns. */
export function isPromise (value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

/**
 * What an app's callback returned, when the plugin does not wait for it (`onEnd`, `onClose`,
 * `onTimeout`, `renderError`): a rejection, or a `then` that cannot be read, is logged, never
 * left unhandled.
 */
export function logRejection (result: unknown, log: FastifyBaseLogger, message: string): void {
  try {
    if (isPromise(result)) result.then(undefined, (error: unknown) => logError(log, 'error', error, message))
  } catch (error) {
    logError(log, 'error', error, message)
  }
}
