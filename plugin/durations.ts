// The one range every duration of the plugin is checked against.
import { InvalidArgumentError, mustBe } from './errors.js'

/** Node fires a timer longer than this after 1 ms; every duration option is checked against it. */
export const MAX_TIMER_MS = 2_147_483_647

export function isDuration (value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_TIMER_MS
}

/** Validates a duration given at run time (`reply.setTimeout(ms)`): `where` the method, `name` the argument. */
export function checkDuration (where: string, name: string, value: unknown): number {
  if (!isDuration(value)) mustBe(InvalidArgumentError, where, name, `an integer from 0 to ${MAX_TIMER_MS} (ms)`, value)
  return value
}
