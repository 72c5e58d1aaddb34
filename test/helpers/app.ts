// A Fastify app with the plugin, listening on 127.0.0.1 port 0, whose log lines are kept for
// assertions; closed when the test ends. Importing this module also makes any unhandled
// rejection or uncaught exception fail the run.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncRouteHandler, type AsyncRoutePluginOptions } from '../../plugin/index.js'
import type { Teardown } from './context.js'
import { captureLogs, type LogLine } from './logs.js'
import { asyncGet, type RouteOptions, type RouteOptionsWithUpstream } from './routes.js'

export { LEVEL, logsAt, type LogLine } from './logs.js'
export { asyncGet, type RouteOptions, type RouteOptionsWithUpstream } from './routes.js'

process.on('unhandledRejection', (reason) => {
  t.fail(`unhandled rejection: ${String((reason as Error)?.stack ?? reason)}`)
})
process.on('uncaughtException', (error) => {
  t.fail(`uncaught exception: ${String(error?.stack ?? error)}`)
})

/**
 * For a test that expects uncaught exceptions (an app logger that throws): until it ends, they
 * are collected in the array returned instead of failing the run.
 */
export function collectUncaught (test: Teardown): unknown[] {
  const errors: unknown[] = []
  const guards = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  process.on('uncaughtException', (error) => { errors.push(error) })
  test.teardown(() => {
    process.removeAllListeners('uncaughtException')
    for (const guard of guards) process.on('uncaughtException', guard)
  })
  return errors
}

export interface TestApp {
  app: FastifyInstance
  logs: LogLine[]
  /** Base URL once listening, e.g. http://127.0.0.1:1234 */
  url: string
}

/**
 * Registers the plugin, lets `setup` declare routes, listens. The app is closed at teardown
 * (if the test did not close it).
 */
export async function startApp (
  test: Teardown,
  pluginOptions: AsyncRoutePluginOptions,
  setup: (app: FastifyInstance) => void | Promise<void>,
  fastifyOptions: FastifyServerOptions = {}
): Promise<TestApp> {
  const { logs, logger } = captureLogs('debug')
  const app = Fastify({ logger, ...fastifyOptions })
  await app.register(asyncRoute, pluginOptions)
  await setup(app)
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  test.teardown(() => app.close())
  return { app, logs, url }
}

/**
 * `startApp` with one route, `GET /` (what most tests need): `route` is its handler, or its
 * options without `method` and `url`.
 */
export function startRoute (test: Teardown, pluginOptions: AsyncRoutePluginOptions, route: RouteOptionsWithUpstream, fastifyOptions?: FastifyServerOptions): Promise<TestApp>
export function startRoute (test: Teardown, pluginOptions: AsyncRoutePluginOptions, route: AsyncRouteHandler | RouteOptions, fastifyOptions?: FastifyServerOptions): Promise<TestApp>
export function startRoute (
  test: Teardown,
  pluginOptions: AsyncRoutePluginOptions,
  route: AsyncRouteHandler | RouteOptions | RouteOptionsWithUpstream,
  fastifyOptions: FastifyServerOptions = {}
): Promise<TestApp> {
  return startApp(test, pluginOptions, (app) => { asyncGet(app, '/', route as RouteOptions) }, fastifyOptions)
}

/** Closes `app` and says how long its `close()` took, in ms. */
export async function closeTimed (app: FastifyInstance): Promise<number> {
  const started = Date.now()
  await app.close()
  return Date.now() - started
}
