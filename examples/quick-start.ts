// The example at the top of the README, as written there: it expects an upstream on
// 127.0.0.1:8080 and declares the route (call app.listen() to serve it).
import Fastify from 'fastify'
import asyncRoute from 'fastify-async-route'

const app = Fastify({ logger: true })
await app.register(asyncRoute, { timeout: 10_000 })

app.asyncRoute({
  method: 'GET',
  url: '/',
  handler (request, reply) {
    reply.fetch('http://127.0.0.1:8080/', (err, res) => {   // returns at once; reply stays open
      if (err) return reply.fail(err)
      request.log.info(Object.keys(res.headers))
      res.body.dump().then(() => reply.finish('done'))        // without this: hang, then watchdog
    })
  }
})

export { app }
