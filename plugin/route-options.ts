// Checks an `asyncRoute()` call's own options once, when the route is declared, and resolves
// them against the plugin's: the per-request path only reads the result.
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { PluginContext, RouteContext, UserFunction, WatchdogHook } from './context.js'
import { isDuration } from './durations.js'
import { InvalidOptionError, mustBe } from './errors.js'
import { COUNT_RANGE, DURATION_RANGE } from './options.js'
import { WatchdogQueue } from './watchdog-queue.js'
import { resolveRetry, type Refuse } from './retry-policy.js'
import { resolveCompress } from './compression.js'
import type { AsyncRouteOptions } from './types.js'

const refuseRouteOption: Refuse = (name, expected, value) => mustBe(InvalidOptionError, 'asyncRoute():', name, expected, value)

function duration (name: string, value: unknown, range = DURATION_RANGE): number {
  if (!isDuration(value)) refuseRouteOption(name, range, value)
  return value
}

/** The plugin's part of a route, and the options Fastify gets (everything else, as given). */
export function resolveRouteOptions (
  plugin: PluginContext,
  instance: FastifyInstance,
  options: AsyncRouteOptions<any>
): { route: RouteContext, fastifyOptions: Omit<RouteOptions, 'handler'> } {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('asyncRoute() takes a route options object')
  }
  const { handler, timeout, upstream, onUpstreamError, onWatchdog, warnUnfinished, idleTimeout, maxPending, retry, compress, renderError, ...fastifyOptions } = options
  if (typeof handler !== 'function') {
    throw new InvalidOptionError(`asyncRoute(): "handler" must be a function (${String(options.method)} ${String(options.url)})`)
  }
  if (upstream !== undefined && typeof upstream !== 'string' && typeof upstream !== 'function' && !(upstream instanceof URL)) {
    throw new InvalidOptionError('asyncRoute(): "upstream" must be a URL string, a URL or a function of the request')
  }
  if (onUpstreamError !== undefined && typeof onUpstreamError !== 'function') {
    throw new InvalidOptionError('asyncRoute(): "onUpstreamError" must be a function')
  }
  if (onWatchdog !== undefined && typeof onWatchdog !== 'function') {
    throw new InvalidOptionError('asyncRoute(): "onWatchdog" must be a function (request, reply, report)')
  }
  if (renderError !== undefined && typeof renderError !== 'function') {
    refuseRouteOption('renderError', 'a function (error, request, reply)', renderError)
  }
  const watchdog = timeout === undefined ? plugin.timeout : duration('timeout', timeout)
  const route: RouteContext = {
    plugin,
    instance,
    handler: handler as UserFunction,
    timeout: watchdog,
    watchdogs: watchdog > 0 ? new WatchdogQueue() : null,
    onWatchdog: (onWatchdog as WatchdogHook | undefined) ?? plugin.onTimeout,
    warnUnfinished: warnUnfinished === undefined
      ? plugin.warnUnfinished
      : warnUnfinished === false ? 0 : duration('warnUnfinished', warnUnfinished),
    idleTimeout: idleTimeout === undefined ? plugin.idleTimeout : duration('idleTimeout', idleTimeout),
    maxPending: maxPending === undefined ? 0 : duration('maxPending', maxPending, COUNT_RANGE),
    open: 0,
    retry: retry === undefined ? plugin.retry : resolveRetry(retry, plugin.retry, refuseRouteOption),
    compress: compress === undefined ? plugin.compress : resolveCompress(compress, refuseRouteOption),
    renderError: renderError ?? plugin.renderError,
    upstream: upstream ?? null,
    onUpstreamError: (onUpstreamError as UserFunction | undefined) ?? null,
    warnedReturn: false
  }
  return { route, fastifyOptions: fastifyOptions as Omit<RouteOptions, 'handler'> }
}
