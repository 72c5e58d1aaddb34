// The retry policy: checked once per level (plugin at `register`, route at `asyncRoute()`, a
// call's own `retry` when the call is made), each level replacing the one above field by field,
// and the decisions a retrying request asks of it: may this try be retried, and after how long.
//
// Why not undici's own RetryHandler (`interceptors.retry`, lib/handler/retry-handler.js)? What
// fits was taken from it: the shape of the decision (method, then status code or error code,
// then the count), its reading of `retry-after` (seconds, else an HTTP date), and its rule that
// only a body that can be sent again may be retried. Its semantics differ from the contract
// where it matters, so the plugin retries on its own:
// - tries run out on a retryable status: it fails with `RequestRetryError` (`throwOnError`);
//   a proxy must relay that last response as it is;
// - a body cut mid-way is resumed with a `range` request; the contract never retries once
//   anything of the response reached the handler or the client;
// - its wait is a bare `setTimeout`: not bounded by the reply's watchdog, not cancelled when
//   the reply ends, not shown as in flight in `pending()` and the hang report;
// - its delay has no jitter, honours `retry-after` on any retryable status and caps it at
//   `maxTimeout`; the contract wants full jitter, and `retry-after` on 429 and 503 only,
//   honoured when longer, bounded by the watchdog alone;
// - it would have to wrap the user's dispatcher, which may be of another undici major.
import { AsyncResource } from 'node:async_hooks'
import { MAX_TIMER_MS } from './durations.js'
import { codeOf } from './error-mapping.js'
import { InvalidArgumentError, mustBe } from './errors.js'
import type { RetryPolicy } from './types.js'

export interface ResolvedRetry {
  readonly attempts: number
  readonly methods: ReadonlySet<string>
  readonly statusCodes: ReadonlySet<number>
  readonly errorCodes: ReadonlySet<string>
  readonly minDelay: number
  readonly maxDelay: number
}

export const MAX_ATTEMPTS = 10
export const MAX_DELAY_MS = 60_000

/** The plugin's default: one try, no retry. */
export const NO_RETRY: ResolvedRetry = Object.freeze({
  attempts: 1,
  methods: new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']),
  statusCodes: new Set([502, 503, 504]),
  errorCodes: new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']),
  minDelay: 25,
  maxDelay: 250
})

const FIELDS = new Set(['attempts', 'methods', 'statusCodes', 'errorCodes', 'minDelay', 'maxDelay'])

/** Reports an invalid field: `name` is `retry.<field>`; throws the level's error class. */
export type Refuse = (name: string, expected: string, value: unknown) => never

function integer (value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
}

function list<T> (refuse: Refuse, field: string, value: unknown, expected: string, check: (item: unknown) => boolean, normalise: (item: any) => T): Set<T> {
  if (!Array.isArray(value) || !value.every(check)) refuse(`retry.${field}`, expected, value)
  return new Set((value as unknown[]).map(normalise))
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** `value` laid over `base` field by field; `refuse` is called for anything out of range. */
export function resolveRetry (value: unknown, base: ResolvedRetry, refuse: Refuse): ResolvedRetry {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    refuse('retry', 'an object { attempts, methods, statusCodes, errorCodes, minDelay, maxDelay }', value)
  }
  const policy = value as RetryPolicy
  for (const key of Object.keys(policy)) {
    if (!FIELDS.has(key)) refuse(`retry.${key}`, 'absent (not a retry option)', (policy as Record<string, unknown>)[key])
  }
  const { attempts, methods, statusCodes, errorCodes, minDelay, maxDelay } = policy
  if (attempts !== undefined && !integer(attempts, 1, MAX_ATTEMPTS)) refuse('retry.attempts', `an integer from 1 to ${MAX_ATTEMPTS}`, attempts)
  if (minDelay !== undefined && !integer(minDelay, 0, MAX_DELAY_MS)) refuse('retry.minDelay', `an integer from 0 to ${MAX_DELAY_MS} (ms)`, minDelay)
  if (maxDelay !== undefined && !integer(maxDelay, 0, MAX_DELAY_MS)) refuse('retry.maxDelay', `an integer from 0 to ${MAX_DELAY_MS} (ms)`, maxDelay)
  const resolved: ResolvedRetry = {
    attempts: attempts ?? base.attempts,
    methods: methods === undefined
      ? base.methods
      : list(refuse, 'methods', methods, 'an array of HTTP method names',
        (item) => typeof item === 'string' && TOKEN.test(item), (item: string) => item.toUpperCase()),
    statusCodes: statusCodes === undefined
      ? base.statusCodes
      : list(refuse, 'statusCodes', statusCodes, 'an array of integer status codes from 100 to 599',
        (item) => integer(item, 100, 599), (item: number) => item),
    errorCodes: errorCodes === undefined
      ? base.errorCodes
      : list(refuse, 'errorCodes', errorCodes, 'an array of error code strings',
        (item) => typeof item === 'string' && item !== '', (item: string) => item),
    minDelay: minDelay ?? base.minDelay,
    maxDelay: maxDelay ?? base.maxDelay
  }
  if (resolved.minDelay > resolved.maxDelay) {
    refuse('retry.minDelay', `at most retry.maxDelay (${resolved.maxDelay})`, resolved.minDelay)
  }
  return resolved
}

/** The policy of one call: the route's, or the call's own `retry` laid over it (a bad one throws `InvalidArgumentError`). */
export function callPolicy (base: ResolvedRetry, retry: unknown, what: string): ResolvedRetry {
  if (retry === undefined) return base
  return resolveRetry(retry, base, (name, expected, value) => mustBe(InvalidArgumentError, `${what}:`, name, expected, value))
}

/** True when a body can be sent again as it is: none, a string or bytes (never a stream). */
export function replayable (body: unknown): boolean {
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array
}

/** A request made under `policy` may be retried at all (checked once, when it starts). */
export function mayRetry (policy: ResolvedRetry, method: string, body: unknown): boolean {
  return policy.attempts > 1 && policy.methods.has(method) && replayable(body)
}

/** The wait before the next try of a request whose try `tries` (1-based) failed with `error`; -1: not retryable. */
export function errorDelay (policy: ResolvedRetry, tries: number, error: unknown): number {
  if (tries >= policy.attempts) return -1
  const code = codeOf(error)
  return code !== undefined && policy.errorCodes.has(code) ? backoff(policy, tries) : -1
}

/** The same for a response: -1 when its status is not retryable, or the tries are used up. */
export function statusDelay (policy: ResolvedRetry, tries: number, statusCode: number, retryAfter: string | string[] | undefined): number {
  if (tries >= policy.attempts || !policy.statusCodes.has(statusCode)) return -1
  const delay = backoff(policy, tries)
  if ((statusCode !== 429 && statusCode !== 503) || retryAfter === undefined) return delay
  const asked = retryAfterMs(String(retryAfter))
  // Longer than a timer can wait (Node would fire it after 1 ms): never waited for, never
  // shortened into an immediate retry; the response is relayed.
  if (asked > MAX_TIMER_MS) return -1
  return Math.max(delay, asked)
}

/**
 * Exponential from `minDelay`, capped at `maxDelay`, with full jitter: the wait before try
 * n + 1 is drawn uniformly from `minDelay` to `min(maxDelay, minDelay × 2^n)`, so that tries of
 * many requests that failed together do not come back together. (undici's default has no
 * jitter: `min(maxTimeout, minTimeout × factor^(n−1))`.)
 */
function backoff (policy: ResolvedRetry, tries: number): number {
  const { minDelay } = policy
  const cap = Math.min(policy.maxDelay, minDelay * 2 ** tries)
  return minDelay + Math.floor(Math.random() * (cap - minDelay + 1))
}

/** `retry-after`: whole seconds, or an HTTP date (as undici's RetryHandler reads it); 0 when neither. */
export function retryAfterMs (value: string): number {
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const date = Date.parse(trimmed)
  return Number.isNaN(date) ? 0 : Math.max(0, date - Date.now())
}

/**
 * The retry bookkeeping of one request that may be retried; a request that cannot be retried
 * has none (nothing is allocated for it).
 */
export class RetryState<Options> {
  readonly policy: ResolvedRetry
  /** What is sent again on each try (the body is a string, bytes or nothing). */
  readonly options: Options
  /**
   * The async context the request was made in. A try fails in undici's callbacks, which run in
   * the context of whichever request opened the socket: the next try must not start there.
   */
  readonly asyncContext = new AsyncResource('fastify-async-route.retry')
  /** Tries made so far. */
  tries = 1
  /** The wait before the next try; the request stays tracked (in flight) meanwhile. */
  timer: NodeJS.Timeout | null = null
  /** When the next try is due (epoch ms), for an answer still being read before it. */
  due = 0

  constructor (policy: ResolvedRetry, options: Options) {
    this.policy = policy
    this.options = options
  }

  /**
   * `delay` (from `errorDelay`/`statusDelay`) when a next try may be made: retryable, and
   * starting before the reply's watchdog fires (`deadline`); else -1.
   */
  next (delay: number, deadline: number): number {
    if (delay < 0 || Date.now() + delay >= deadline) return -1
    this.due = Date.now() + delay
    return delay
  }

  /**
   * Waits `delay` ms, then counts the try and calls `retry(request)` in the context the request
   * was made in. The timer keeps the process alive (a reply waits on it).
   */
  wait<Request> (delay: number, retry: (request: Request) => void, request: Request): void {
    this.timer = setTimeout(startTry, delay, this, retry, request)
  }

  /** The reply ended (or the caller gave up) during the wait. True when there was one. */
  cancelWait (): boolean {
    if (this.timer === null) return false
    clearTimeout(this.timer)
    this.timer = null
    return true
  }
}

function startTry<Request> (state: RetryState<unknown>, retry: (request: Request) => void, request: Request): void {
  state.timer = null
  state.tries++
  state.asyncContext.runInAsyncScope(retry, null, request)
}
