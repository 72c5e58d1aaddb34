// The plugin entry: checks the options, decorates `app.asyncRoute`, and takes part in close.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { PluginContext } from './context.js'
import * as errors from './errors.js'
import { closeSessions, sessionsOf } from './http2-sessions.js'
import { resolveOptions } from './options.js'
import { Registry } from './registry.js'
import { createAsyncRoute } from './route.js'
import { closeOwnDispatcher, createDispatcher } from './undici-adapter.js'
import type { AsyncRouteDecorator, AsyncRoutePlugin, AsyncRoutePluginOptions } from './types.js'

export type * from './types.js'
export * from './errors.js'

function plugin (fastify: FastifyInstance, options: AsyncRoutePluginOptions, done: (error?: Error) => void): void {
  // A callback plugin must report a bad option through done(): avvio does not catch a
  // synchronous throw, which would become an uncaught exception instead of a rejection.
  let resolved: ReturnType<typeof resolveOptions>
  try {
    resolved = resolveOptions(options)
  } catch (error) {
    done(error as Error)
    return
  }
  const ownsDispatcher = resolved.dispatcher === undefined
  const registry = new Registry()
  const context: PluginContext = {
    dispatcher: resolved.dispatcher ?? createDispatcher(),
    timeout: resolved.timeout,
    onTimeout: resolved.onTimeout ?? null,
    warnUnfinished: resolved.warnUnfinished,
    idleTimeout: resolved.idleTimeout,
    deadlineHeader: resolved.deadlineHeader,
    maxPending: resolved.maxPending,
    allowedOrigins: resolved.allowedOrigins,
    retry: resolved.retry,
    compress: resolved.compress,
    renderError: resolved.renderError,
    registry
  }
  const asyncRoute = createAsyncRoute(context, fastify) as unknown as AsyncRouteDecorator
  asyncRoute.pending = () => registry.pending()
  asyncRoute.stats = () => registry.stats()
  fastify.decorate('asyncRoute', asyncRoute)

  // Fastify's server.close() waits for open connections before onClose hooks run, so the
  // grace must start in preClose, or a pending reply would hold close() forever. Fastify
  // bounds each preClose hook by its pluginTimeout: the hook returns before that, and the
  // rest of the grace runs while server.close() waits for the pending replies' connections.
  const pluginTimeout = fastify.initialConfig.pluginTimeout as number
  const hookBudget = pluginTimeout > 0 ? pluginTimeout - Math.min(1000, Math.floor(pluginTimeout / 2)) : Infinity
  // Then the server's HTTP/2 sessions are closed, as Node closes idle HTTP/1 connections.
  const sessions = sessionsOf(fastify.server)
  fastify.addHook('preClose', (hookDone) => registry.close(resolved.closeGrace, hookBudget, () => {
    closeSessions(sessions)
    hookDone()
  }))
  if (ownsDispatcher) fastify.addHook('onClose', async () => await closeOwnDispatcher(context.dispatcher))
  done()
}

const asyncRoute = fp(plugin, { name: 'fastify-async-route', fastify: '5.x' }) as unknown as AsyncRoutePlugin
// `require('fastify-async-route')` returns the plugin itself: its properties are the names of
// this module, the same set (test/package/package.test.ts compares them): `default`, `asyncRoute`
// and the error classes. fastify-plugin's own camel-cased alias is not one of them.
delete (asyncRoute as unknown as Record<string, unknown>).fastifyAsyncRoute
asyncRoute.default = asyncRoute
asyncRoute.asyncRoute = asyncRoute
Object.assign(asyncRoute, errors)

export default asyncRoute
export { asyncRoute }
