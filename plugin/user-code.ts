// What the plugin assumes of values the app's own functions return, and how it calls the
// callbacks it does not wait for.
import type { AsyncResource } from 'node:async_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { logError } from './error-answer.js'

/** A thenable: what an async handler, hook or callback returns. */
export function isPromise (value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

/**
 * Calls an app's callback that the plugin does not wait for (`onEnd`, `onClose`, `onTimeout`,
 * `renderError`) in the reply's context: a throw is logged as "`name` threw", a rejection (or
 * a `then` that cannot be read) as "`name` rejected"; neither is raised (only a logger that
 * throws twice, as `logError` tries it, gets a throw out). False when the callback threw.
 */
export function callAppCallback (
  context: AsyncResource, log: FastifyBaseLogger, name: string,
  fn: (...args: any[]) => unknown, ...args: unknown[]
): boolean {
  let result: unknown
  try {
    result = context.runInAsyncScope(fn, undefined, ...args)
  } catch (error) {
    logError(log, 'error', error, `${name} threw`)
    return false
  }
  try {
    if (isPromise(result)) result.then(undefined, (error: unknown) => logError(log, 'error', error, `${name} rejected`))
  } catch (error) {
    logError(log, 'error', error, `${name} rejected`)
  }
  return true
}
