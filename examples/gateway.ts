// A small gateway in front of a JSON API: `reply.forward` sends the incoming request on
// (method, cleaned headers, x-forwarded-*, the body as parsed or streamed) and relays the
// answer; idempotent reads are retried when the API is briefly unavailable; only the API's
// origin may be reached.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'

export async function buildGatewayApp (apiUrl: string, options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  const api = new URL(apiUrl).origin
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 5_000, allowedOrigins: [api] })

  // Reads: a GET may be sent again, so a 502/503/504 or a refused connection gets up to two
  // more tries (25 ms to 250 ms apart, `retry-after` honoured), as long as the watchdog allows.
  app.asyncRoute<{ Params: { id: string } }>({
    method: 'GET',
    url: '/api/items/:id',
    retry: { attempts: 3 },
    handler (request, reply) {
      // request.url keeps the query; a `..` in it is refused with 400 before anything is sent.
      return reply.forward(api + request.url)
    }
  })

  // Writes: the parsed JSON body goes on as JSON; a POST is never retried (not idempotent).
  app.asyncRoute({
    method: ['POST', 'PUT', 'DELETE'],
    url: '/api/items*',
    handler (request, reply) {
      return reply.forward(api + request.url, { headers: { 'x-gateway': 'fastify-async-route', cookie: null } })
    }
  })

  // Uploads: a pass-through parser leaves the body as the incoming stream, which forward()
  // streams to the API as it arrives (with its content-length), without buffering it.
  await app.register(async (uploads) => {
    uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    uploads.asyncRoute({
      method: 'PUT',
      url: '/api/files/:name',
      handler (request, reply) {
        return reply.forward(api + request.url)
      }
    })
  })
  return app
}
