// Turns `asyncRoute` options into an ordinary Fastify route whose handler hijacks the reply,
// runs the `upstream` step and the user's handler, and turns their throws into `fail`.
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { PluginContext, RouteContext, UpstreamTarget, UserFunction, WatchdogHook } from './context.js'
import { AsyncReplyImpl, isPromise } from './reply.js'
import type { AsyncRouteOptions, UpstreamResponse } from './types.js'
import { fetchUpstream, splitRequest } from './upstream.js'
import { checkDuration } from './watchdog.js'

export function createAsyncRoute (plugin: PluginContext, owner: FastifyInstance) {
  return function asyncRoute (this: FastifyInstance | undefined, options: AsyncRouteOptions<any>): FastifyInstance {
    const instance = this ?? owner
    if (options === null || typeof options !== 'object') {
      throw new TypeError('asyncRoute() takes a route options object')
    }
    const { handler, timeout, upstream, onUpstreamError, onWatchdog, warnUnfinished, ...routeOptions } = options
    if (typeof handler !== 'function') {
      throw new TypeError(`asyncRoute(): "handler" must be a function (${String(options.method)} ${String(options.url)})`)
    }
    if (upstream !== undefined && typeof upstream !== 'string' && typeof upstream !== 'function' && !(upstream instanceof URL)) {
      throw new TypeError('asyncRoute(): "upstream" must be a URL string, a URL or a function of the request')
    }
    if (onUpstreamError !== undefined && typeof onUpstreamError !== 'function') {
      throw new TypeError('asyncRoute(): "onUpstreamError" must be a function')
    }
    if (onWatchdog !== undefined && typeof onWatchdog !== 'function') {
      throw new TypeError('asyncRoute(): "onWatchdog" must be a function (request, reply, report)')
    }
    const route: RouteContext = {
      plugin,
      instance,
      handler: handler as UserFunction,
      timeout: timeout === undefined ? plugin.timeout : checkDuration('asyncRoute(): "timeout"', timeout),
      onWatchdog: (onWatchdog as WatchdogHook | undefined) ?? plugin.onTimeout,
      warnUnfinished: warnUnfinished === undefined
        ? plugin.warnUnfinished
        : warnUnfinished === false ? 0 : checkDuration('asyncRoute(): "warnUnfinished"', warnUnfinished),
      upstream: upstream ?? null,
      onUpstreamError: (onUpstreamError as UserFunction | undefined) ?? null
    }
    if (route.warnUnfinished > 0) plugin.registry.watchIdle(route.warnUnfinished)
    instance.route({
      ...(routeOptions as RouteOptions),
      handler (request: FastifyRequest, reply: FastifyReply) {
        startReply(route, request, reply)
      }
    })
    // Fastify serialises with the response schema only in reply.send(), which a hijacked reply
    // never reaches: say so once, when the route is declared, rather than let it look applied.
    if (routeOptions.schema?.response !== undefined) {
      instance.log.warn(
        { method: routeOptions.method, url: routeOptions.url },
        'asyncRoute(): schema.response is not used by async routes (the reply is hijacked): it neither serialises nor filters what reply.finish() sends'
      )
    }
    return instance
  }
}

function startReply (route: RouteContext, request: FastifyRequest, fastifyReply: FastifyReply): void {
  fastifyReply.hijack()
  const reply = new AsyncReplyImpl(route, request, fastifyReply)
  reply.start()
  if (!reply.open) return
  if (route.upstream === null) {
    invoke(reply, route.handler, request, reply, undefined)
  } else {
    // Never rejects: every failure inside ends the reply.
    void runUpstreamStep(reply, route)
  }
}

/** The `upstream` option: performed under the watchdog before the handler runs. */
async function runUpstreamStep (reply: AsyncReplyImpl, route: RouteContext): Promise<void> {
  let response: UpstreamResponse
  try {
    const upstream = route.upstream as Exclude<RouteContext['upstream'], null>
    const target: UpstreamTarget = typeof upstream === 'function' ? await upstream(reply.request) : upstream
    response = typeof target === 'string' || target instanceof URL
      ? await fetchUpstream(reply, target, undefined)
      : await fetchUpstream(reply, ...splitRequest(target))
  } catch (error) {
    // Cancelled because the reply already ended (watchdog, client gone, close): nothing to do.
    if (!reply.open) return
    if (route.onUpstreamError === null) return reply.failByPlugin(error)
    return invoke(reply, route.onUpstreamError, error, reply.request, reply)
  }
  invoke(reply, route.handler, reply.request, reply, response)
}

/**
 * Calls a user function of the route. Its return value is ignored, except that a throw or a
 * rejection before the reply was finished fails the reply.
 */
function invoke (reply: AsyncReplyImpl, fn: UserFunction, a: unknown, b: unknown, c: unknown): void {
  let result: unknown
  try {
    result = fn.call(reply.route.instance, a, b, c)
  } catch (error) {
    settled(reply)
    return handlerError(reply, error)
  }
  if (isPromise(result)) {
    result.then(() => settled(reply), (error: unknown) => {
      settled(reply)
      handlerError(reply, error)
    })
  } else {
    settled(reply)
  }
}

function settled (reply: AsyncReplyImpl): void {
  reply.handlerSettled = true
  reply.lastActivity = Date.now()
}

function handlerError (reply: AsyncReplyImpl, error: unknown): void {
  if (reply.open) return reply.failByPlugin(error)
  reply.request.log.debug({ err: error }, 'async route handler threw after its reply ended')
}
