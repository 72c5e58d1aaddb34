// Declaring routes in tests: `GET url` with a handler or options, without repeating the method
// and the url's key in every test. Importing this module has no side effect.
import type { FastifyInstance } from 'fastify'
import type { AsyncRouteHandler, AsyncRouteOptions, AsyncRouteOptionsWithUpstream } from '../../plugin/index.js'

/** A route's options less the method and url. */
export type RouteOptions = Omit<AsyncRouteOptions, 'method' | 'url'>
export type RouteOptionsWithUpstream = Omit<AsyncRouteOptionsWithUpstream, 'method' | 'url'>

/** Declares `GET url` on `app`: `route` is its handler, or its options without `method` and `url`. */
export function asyncGet (app: FastifyInstance, url: string, route: RouteOptionsWithUpstream): void
export function asyncGet (app: FastifyInstance, url: string, route: AsyncRouteHandler | RouteOptions): void
export function asyncGet (app: FastifyInstance, url: string, route: AsyncRouteHandler | RouteOptions | RouteOptionsWithUpstream): void {
  const options = typeof route === 'function' ? { handler: route } : route
  app.asyncRoute({ method: 'GET', url, ...options } as AsyncRouteOptions)
}

/** A handler that fetches `target` and finishes with the upstream body as text. */
export function fetchText (target: string | URL): AsyncRouteHandler {
  return async (_request, reply) => {
    const res = await reply.fetch(target)
    reply.finish(await res.body.text())
  }
}

/** A handler that pipes `target` into the reply. */
export function pipeTo (target: string | URL): AsyncRouteHandler {
  return (_request, reply) => reply.pipe(target)
}
