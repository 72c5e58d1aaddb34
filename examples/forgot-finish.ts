// What happens when a handler forgets `reply.finish()`. In Tornado the browser would hang
// forever; here the watchdog answers 504 after `timeout` ms and logs a hang report saying
// where the reply was stuck:
//
//   {"level":40,"reqId":"req-1","report":{"id":"req-1","method":"GET","url":"/forgot",
//    "elapsedMs":501,"handlerSettled":true,"headersSent":false,"bytesWritten":0,
//    "inflight":[]},"msg":"async reply not finished after 501 ms (head not sent); the
//    handler returned and nothing is in flight: was reply.finish() forgotten?"}
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'

export async function buildForgetfulApp (feedUrl: string, options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 500 })

  app.asyncRoute({
    method: 'GET',
    url: '/forgot',
    handler (request, reply) {
      reply.fetch(feedUrl, (err, res) => {
        if (err) return reply.fail(err)
        request.log.info({ status: res.statusCode }, 'feed answered')
        res.body.dump().catch(() => {})
        // Bug on purpose: reply.finish() is never called.
      })
    }
  })
  return app
}
