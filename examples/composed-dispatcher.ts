// A dispatcher of your own: an undici Agent composed with undici's interceptors, here `dns`
// (lookups cached for their TTL, requests spread over a name's addresses). Every upstream path
// of the plugin goes through it. The plugin does not close a dispatcher it was given: the app
// does, when it closes.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Agent, interceptors } from 'undici'
import asyncRoute from 'fastify-async-route'

export async function buildComposedDispatcherApp (feedUrl: string, options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  // IPv4 only: the example feed listens on 127.0.0.1, and `localhost` may resolve to ::1 first.
  const dispatcher = new Agent().compose(interceptors.dns({ dualStack: false, affinity: 4 }))
  const app = Fastify(options)
  app.addHook('onClose', async () => { await dispatcher.close() })
  await app.register(asyncRoute, { timeout: 5_000, dispatcher })

  app.asyncRoute({
    method: 'GET',
    url: '/feed',
    handler (_request, reply) {
      void reply.pipe(feedUrl)
    }
  })

  app.asyncRoute({
    method: 'GET',
    url: '/count',
    async handler (_request, reply) {
      const res = await reply.fetch(feedUrl)
      const feed = await res.body.json() as { entries: unknown[] }
      reply.finish(`${feed.entries.length} entries`)
    }
  })
  return app
}
