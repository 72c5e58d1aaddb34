// A reply written piece by piece: `write()` sends the head with the first chunk, `flush()`
// waits until the chunk was handed to the socket (backpressure), `finish()` ends it.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'

export async function buildStreamingApp (options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 5_000 })

  app.asyncRoute<{ Querystring: { from?: string } }>({
    method: 'GET',
    url: '/countdown',
    schema: {
      querystring: { type: 'object', properties: { from: { type: 'string', pattern: '^[0-9]+$' } } }
    },
    async handler (request, reply) {
      reply.header('content-type', 'text/plain; charset=utf-8')
      for (let n = Number(request.query.from ?? 3); n > 0; n--) {
        if (reply.signal.aborted) return // the client left: stop working
        reply.write(`${n}\n`)
        await reply.flush()
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      reply.finish('liftoff\n')
    }
  })
  return app
}
