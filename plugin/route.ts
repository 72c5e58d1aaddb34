// Turns `asyncRoute` options into an ordinary Fastify route whose handler hijacks the reply,
// runs the `upstream` step and the user's handler, and turns their throws into `fail`.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { PluginContext, RouteContext, UpstreamTarget, UserFunction } from './context.js'
import { answerOverloaded, overloaded } from './overload.js'
import { logError, type ErrorAnswer } from './error-answer.js'
import { AsyncReplyImpl } from './reply.js'
import { resolveRouteOptions } from './route-options.js'
import type { AsyncRouteOptions, UpstreamResponse } from './types.js'
import { fetchUpstream } from './fetch.js'
import { splitRequest } from './upstream-call.js'
import { isPromise } from './user-code.js'
import { kFailByPlugin, kOpen, kRenderOverload, kRoute, kSettle, kStart, kWatch } from './symbols.js'

export function createAsyncRoute (plugin: PluginContext, owner: FastifyInstance) {
  return function asyncRoute (this: FastifyInstance | undefined, options: AsyncRouteOptions<any>): FastifyInstance {
    const instance = this ?? owner
    const { route, fastifyOptions: routeOptions } = resolveRouteOptions(plugin, instance, options)
    if (route.warnUnfinished > 0) plugin.registry.watchUnfinished(route.warnUnfinished)
    instance.route({
      ...routeOptions,
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
  if (overloaded(route)) {
    const rendered = route.renderError === null
      ? null
      : (answer: ErrorAnswer) => new AsyncReplyImpl(route, request, fastifyReply)[kRenderOverload](answer)
    return answerOverloaded(route, request, fastifyReply, rendered)
  }
  const reply = new AsyncReplyImpl(route, request, fastifyReply)
  reply[kStart]()
  if (!reply[kOpen]) return
  try {
    if (route.upstream === null) {
      invoke(reply, route.handler, request, reply, undefined)
    } else {
      // Never rejects: every failure inside ends the reply.
      void runUpstreamStep(reply, route)
    }
  } finally {
    // Whatever happened in there, a reply still open is watched from now on.
    if (reply[kOpen]) reply[kWatch]()
  }
}

/** The `upstream` option: performed under the watchdog before the handler runs. */
async function runUpstreamStep (reply: AsyncReplyImpl, route: RouteContext): Promise<void> {
  let response: UpstreamResponse
  try {
    const upstream = route.upstream as Exclude<RouteContext['upstream'], null>
    const target: UpstreamTarget = typeof upstream === 'function' ? await upstream(reply.request) : upstream
    // (A request object is split; anything else is taken as a URL, and refused as one if it is not.)
    response = target !== null && typeof target === 'object' && !(target instanceof URL)
      ? await fetchUpstream(reply, ...splitRequest(target))
      : await fetchUpstream(reply, target as string, undefined)
  } catch (error) {
    // Cancelled because the reply already ended (watchdog, client gone, close): nothing to do.
    if (!reply[kOpen]) return
    if (route.onUpstreamError === null) return reply[kFailByPlugin](error)
    return invoke(reply, route.onUpstreamError, error, reply.request, reply)
  }
  invoke(reply, route.handler, reply.request, reply, response)
}

/**
 * Calls a user function of the route. Its return value is not sent (a value the handler
 * returns while its reply is open gets one warning per route), and a throw or a rejection
 * before the reply was finished fails the reply.
 */
function invoke (reply: AsyncReplyImpl, fn: UserFunction, a: unknown, b: unknown, c: unknown): void {
  let result: unknown
  try {
    result = fn.call(reply[kRoute].instance, a, b, c)
    // (Inside the try: reading a returned value's `then` can throw too.)
    if (isPromise(result)) {
      result.then((value: unknown) => {
        settled(reply)
        returned(reply, fn, value)
      }, (error: unknown) => {
        settled(reply)
        handlerError(reply, error)
      })
      return
    }
  } catch (error) {
    settled(reply)
    return handlerError(reply, error)
  }
  settled(reply)
  returned(reply, fn, result)
}

/** `return { … }`, a Fastify habit, sends nothing from an async route: said once per route. */
function returned (reply: AsyncReplyImpl, fn: UserFunction, value: unknown): void {
  const route = reply[kRoute]
  if (value === undefined || value === reply || !reply[kOpen] || fn !== route.handler || route.warnedReturn) return
  route.warnedReturn = true
  const { method, url } = reply.request.routeOptions
  reply.request.log.warn({ method, url },
    `async route ${String(method)} ${String(url)}: the handler returned a value while its reply was open; it is not sent (call reply.finish(value) to send it)`)
}

function settled (reply: AsyncReplyImpl): void {
  reply[kSettle]()
}

function handlerError (reply: AsyncReplyImpl, error: unknown): void {
  if (reply[kOpen]) return reply[kFailByPlugin](error)
  logError(reply.request.log, 'debug', error, 'async route handler threw after its reply ended')
}
