// Three ways to send an upstream response on to the client with `pipe`: status, headers
// (without hop-by-hop ones) and body stream through with backpressure.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'

export async function buildProxyApp (feedUrl: string, options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 5_000, allowedOrigins: [new URL(feedUrl).origin] })

  // 1. The fastest: the plugin performs the request and streams it straight to the client.
  app.asyncRoute({
    method: 'GET',
    url: '/direct',
    handler (_request, reply) {
      void reply.pipe(feedUrl)
    }
  })

  // 2. Look at the response first, then decide.
  app.asyncRoute({
    method: 'GET',
    url: '/checked',
    async handler (_request, reply) {
      const res = await reply.fetch(feedUrl, { headers: { accept: 'application/json' } })
      if (res.statusCode !== 200) {
        await res.body.dump()
        return reply.status(502).finish({ error: 'feed unavailable' })
      }
      reply.header('x-proxied-by', 'fastify-async-route')
      await reply.pipe(res)
    }
  })

  // 3. Declared on the route: the request runs (under the watchdog) before the handler.
  app.asyncRoute({
    method: 'GET',
    url: '/declared',
    upstream: feedUrl,
    handler (_request, reply, res) {
      void reply.pipe(res)
    }
  })
  return app
}
