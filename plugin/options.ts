// Checks the plugin options once, at `register`, so that nothing fails later at request time.
import { validateHeaderName } from 'node:http'
import type { Dispatcher } from 'undici'
import type { AsyncRoutePluginOptions, RenderError } from './types.js'
import { isDuration, MAX_TIMER_MS } from './durations.js'
import { InvalidOptionError, mustBe } from './errors.js'
import { NO_RETRY, resolveRetry, type ResolvedRetry } from './retry-policy.js'
import { resolveCompress, type CompressPolicy } from './compression.js'

export interface ResolvedOptions {
  timeout: number
  closeGrace: number
  warnUnfinished: number
  /**
   * Typed as undici 7's: the plugin only calls `dispatch()`, with handlers in the form undici 7
   * and 8 both take (undici-adapter.ts).
   */
  dispatcher: Dispatcher | undefined
  onTimeout: AsyncRoutePluginOptions['onTimeout'] | null
  allowedOrigins: Set<string> | null
  idleTimeout: number
  deadlineHeader: string | null
  maxPending: number
  retry: ResolvedRetry
  compress: CompressPolicy | null
  renderError: RenderError | null
}

/**
 * Every plugin option: each is read in resolveOptions() below. A new option is one line here
 * (the type check below fails until it is listed).
 */
const PLUGIN_OPTIONS = [
  'timeout',
  'dispatcher',
  'closeGrace',
  'onTimeout',
  'warnUnfinished',
  'allowedOrigins',
  'idleTimeout',
  'deadlineHeader',
  'maxPending',
  'retry',
  'compress',
  'renderError'
] as const satisfies ReadonlyArray<keyof AsyncRoutePluginOptions>
// Fails to compile while an option of AsyncRoutePluginOptions is missing from the list.
const everyOptionListed: Exclude<keyof AsyncRoutePluginOptions, typeof PLUGIN_OPTIONS[number]> extends never ? true : never = true
void everyOptionListed

/** What Fastify passes to every plugin it registers (@fastify/autoload too): accepted, ignored. */
const FASTIFY_REGISTER_OPTIONS = ['prefix', 'logLevel', 'logSerializers']

const KNOWN_KEYS: ReadonlySet<string> = new Set([...PLUGIN_OPTIONS, ...FASTIFY_REGISTER_OPTIONS])

/** The range message of every duration option, and of `maxPending` (a count). */
export const DURATION_RANGE = `an integer from 0 to ${MAX_TIMER_MS} (ms)`
export const COUNT_RANGE = `an integer from 0 to ${MAX_TIMER_MS}`

function fail (name: string, expected: string, value: unknown): never {
  return mustBe(InvalidOptionError, 'fastify-async-route: option', name, expected, value)
}

function integer (options: AsyncRoutePluginOptions, name: 'timeout' | 'closeGrace' | 'warnUnfinished' | 'idleTimeout' | 'maxPending', fallback: number): number {
  const value: unknown = options[name]
  if (value === undefined) return fallback
  if (!isDuration(value)) {
    fail(name, name === 'maxPending' ? COUNT_RANGE : DURATION_RANGE, value)
  }
  return value
}

/** `scheme://host[:port]` with an optional trailing `/`, normalised to `URL.origin`. */
function origin (value: unknown, index: number): string {
  const name = `allowedOrigins[${index}]`
  if (typeof value !== 'string') fail(name, 'an origin string (scheme://host[:port])', value)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    fail(name, 'an origin (scheme://host[:port])', value)
  }
  const bare = value.endsWith('/') ? value.slice(0, -1) : value
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' ||
      url.search !== '' || url.hash !== '' || bare.slice(url.protocol.length + 2).includes('/') ||
      // WHATWG URL parsing also accepts `http:a/b` and `http://a\b`: a path all the same.
      url.pathname !== '/' || !/^https?:\/\//i.test(value)) {
    fail(name, 'an http(s) origin with no path, query or credentials (scheme://host[:port])', value)
  }
  return url.origin
}

function isHeaderName (value: unknown): value is string {
  if (typeof value !== 'string') return false
  try {
    validateHeaderName(value)
    return true
  } catch {
    return false
  }
}

function optionalFunction<F> (value: F | undefined, name: string, expected: string): F | null {
  if (value === undefined) return null
  if (typeof value !== 'function') fail(name, expected, value)
  return value
}

export function resolveOptions (options: AsyncRoutePluginOptions): ResolvedOptions {
  for (const key of Object.keys(options)) {
    if (!KNOWN_KEYS.has(key)) {
      throw new InvalidOptionError(`fastify-async-route: unknown option ${JSON.stringify(key)} (the options are ${PLUGIN_OPTIONS.join(', ')})`)
    }
  }
  const { dispatcher, onTimeout, allowedOrigins } = options
  if (dispatcher !== undefined && typeof (dispatcher as { dispatch?: unknown } | null)?.dispatch !== 'function') {
    fail('dispatcher', 'an undici Dispatcher (an object with a dispatch() method)', dispatcher)
  }
  if (onTimeout !== undefined && typeof onTimeout !== 'function') {
    fail('onTimeout', 'a function (request, reply, report)', onTimeout)
  }
  let origins: Set<string> | null = null
  if (allowedOrigins !== undefined) {
    if (!Array.isArray(allowedOrigins)) fail('allowedOrigins', 'an array of origins', allowedOrigins)
    origins = new Set(allowedOrigins.map(origin))
  }
  const { deadlineHeader } = options
  if (deadlineHeader !== undefined && !isHeaderName(deadlineHeader)) {
    fail('deadlineHeader', 'a valid header name (e.g. "x-request-timeout-ms")', deadlineHeader)
  }
  return {
    timeout: integer(options, 'timeout', 30_000),
    idleTimeout: integer(options, 'idleTimeout', 0),
    maxPending: integer(options, 'maxPending', 0),
    deadlineHeader: deadlineHeader === undefined ? null : deadlineHeader.toLowerCase(),
    closeGrace: integer(options, 'closeGrace', 10_000),
    warnUnfinished: options.warnUnfinished === false ? 0 : integer(options, 'warnUnfinished', 0),
    dispatcher: dispatcher as Dispatcher | undefined,
    onTimeout: onTimeout ?? null,
    allowedOrigins: origins,
    retry: options.retry === undefined ? NO_RETRY : resolveRetry(options.retry, NO_RETRY, fail),
    compress: resolveCompress(options.compress, fail),
    renderError: optionalFunction(options.renderError, 'renderError', 'a function (error, request, reply)')
  }
}
