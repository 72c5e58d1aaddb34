// `deadlineHeader`: the reply's remaining watchdog time travels with every upstream request,
// and an incoming request may shorten (never lengthen) its own watchdog with it.
import type { FastifyRequest } from 'fastify'
import type { RouteContext } from './context.js'
import { MAX_TIMER_MS } from './durations.js'

const DIGITS = /^\d{1,10}$/

/** The watchdog for this request: the route's, or the incoming budget when that is shorter. */
export function incomingBudget (route: RouteContext, request: FastifyRequest): number {
  const value = request.headers[route.plugin.deadlineHeader as string]
  if (typeof value !== 'string' || !DIGITS.test(value)) return route.timeout
  const budget = Number(value)
  if (budget < 1 || budget > MAX_TIMER_MS) return route.timeout
  return route.timeout > 0 ? Math.min(route.timeout, budget) : budget
}

type Headers = Record<string, string | string[] | number | undefined> | string[] | Iterable<[string, string | string[] | undefined]> | null | undefined

/**
 * `headers` with the deadline header set to the time left before `deadline` (whole ms, at
 * least 1), replacing any header of that name; unchanged while the watchdog is off.
 */
export function withDeadline (name: string, deadline: number, headers: Headers): Headers {
  if (deadline === Infinity) return headers
  const left = String(Math.max(1, Math.floor(deadline - Date.now())))
  const out: Record<string, string | string[] | number | undefined> = {}
  if (headers !== null && headers !== undefined) {
    if (Array.isArray(headers)) {
      // undici's flat form: [name, value, name, value, …]
      for (let i = 0; i < headers.length; i += 2) append(out, headers[i] as string, headers[i + 1] as string, name)
    } else if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
      for (const [key, value] of headers as Iterable<[string, string | string[] | undefined]>) append(out, key, value, name)
    } else {
      for (const key of Object.keys(headers)) append(out, key, (headers as Record<string, string>)[key], name)
    }
  }
  out[name] = left
  return out
}

function append (out: Record<string, string | string[] | number | undefined>, key: string, value: string | string[] | number | undefined, skip: string): void {
  const lower = key.toLowerCase()
  if (lower === skip) return
  const previous = out[key]
  if (previous === undefined) {
    out[key] = value
  } else {
    out[key] = ([] as Array<string | number>).concat(previous as string, value as string).map(String)
  }
}

/** A retried request's options, its deadline header brought up to date (when deadlines travel). */
export function refreshDeadline<Options extends { headers?: unknown }> (name: string | null, deadline: number, options: Options): Options {
  if (name === null) return options
  return { ...options, headers: withDeadline(name, deadline, options.headers as Headers) }
}
