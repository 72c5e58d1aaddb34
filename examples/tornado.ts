// Tornado's classic `@tornado.web.asynchronous` example, ported:
//
//   class MainHandler(tornado.web.RequestHandler):
//       @tornado.web.asynchronous
//       def get(self):
//           http = tornado.httpclient.AsyncHTTPClient()
//           http.fetch(FEED_URL, callback=self.on_response)
//
//       def on_response(self, response):
//           if response.error: raise tornado.web.HTTPError(500)
//           json = tornado.escape.json_decode(response.body)
//           self.write("Fetched " + str(len(json["entries"])) + " entries")
//           self.finish()
//
// The handler returns at once; the reply stays open until `reply.finish()` in the callback.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'

export async function buildTornadoApp (feedUrl: string, options: FastifyServerOptions = { logger: true }): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 10_000 })

  app.asyncRoute({
    method: 'GET',
    url: '/',
    handler (request, reply) {
      reply.fetch(feedUrl, (err, res) => {
        if (err) return reply.fail(err)
        request.log.info({ headers: Object.keys(res.headers) }, 'feed answered')
        res.body.json().then((feed) => {
          const entries = (feed as { entries: unknown[] }).entries
          reply.write(`Fetched ${entries.length} entries from the feed`)
          reply.finish()
        }, (error: unknown) => reply.fail(error))
      })
    }
  })
  return app
}
