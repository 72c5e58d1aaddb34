// Tornado's long-polling chat demo (tornado/demos/chat), ported. Everyone who has the page open
// receives each new message at once: the page keeps one request open,
// `GET /a/message/updates?cursor=<last id seen>`, and the server answers it only when a newer
// message exists. Tornado's handler waits on a `Condition`:
//
//   class MessageUpdatesHandler(tornado.web.RequestHandler):
//       async def post(self):
//           cursor = self.get_argument("cursor", None)
//           messages = global_message_buffer.get_messages_since(cursor)
//           while not messages:
//               self.wait_future = global_message_buffer.cond.wait()
//               try:
//                   await self.wait_future
//               except asyncio.CancelledError:
//                   return
//               messages = global_message_buffer.get_messages_since(cursor)
//           if self.request.connection.stream.closed():
//               return
//           self.write(dict(messages=messages))
//
//       def on_connection_close(self):
//           self.wait_future.cancel()
//
// Here the reply itself waits: the handler puts it on the room's waiter list and returns; the
// reply stays open until a new message `finish()`es it. `reply.onEnd` takes it off the list
// however it ends (answered, browser gone, watchdog): no future to cancel. The route's
// `onWatchdog` answers a poll that waited too long with an empty list, after which the page
// simply polls again.
import { readFileSync } from 'node:fs'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'
import { MessageBuffer, type Room } from './room.js'

export { MessageBuffer, type Message, type Room } from './room.js'

export interface ChatOptions {
  /**
   * The room: a new `MessageBuffer` (this process's memory) by default, or a `RedisRoom`
   * shared by every process. Its owner closes it.
   */
  room?: Room
  /** How long a long poll may wait before it is answered with an empty list, ms. */
  pollTimeout?: number
  /** Fastify's own options (`logger`, `http2`, …). */
  fastify?: FastifyServerOptions
}

const page = (name: string): Buffer => readFileSync(new URL(`./public/${name}`, import.meta.url))
const STATIC = {
  '/': { type: 'text/html; charset=utf-8', body: page('index.html') },
  '/chat.js': { type: 'text/javascript; charset=utf-8', body: page('chat.js') },
  '/chat.css': { type: 'text/css; charset=utf-8', body: page('chat.css') }
}

export async function buildChatApp (options: ChatOptions = {}): Promise<FastifyInstance> {
  const room = options.room ?? new MessageBuffer()
  const app = Fastify(options.fastify ?? { logger: true })
  // Any async route that stays open 5 s with nothing in flight gets a "forgot finish()?" hint…
  await app.register(asyncRoute, { timeout: 30_000, warnUnfinished: 5_000 })

  for (const [url, { type, body }] of Object.entries(STATIC)) {
    app.get(url, (_request, reply) => {
      reply.header('content-security-policy', "default-src 'self'").type(type).send(body)
    })
  }

  // Post a new message to the room (Tornado's MessageNewHandler).
  app.post<{ Body: { body: string } }>('/a/message/new', {
    schema: {
      body: {
        type: 'object',
        required: ['body'],
        properties: { body: { type: 'string', minLength: 1, maxLength: 2000 } }
      }
    }
  }, async (request, reply) => {
    try {
      return await room.add(request.body.body)
    } catch (error) {
      // The shared room is unreachable (Redis down): say so at once; the page keeps the text
      // to send again. The room logs the outage itself, once.
      request.log.debug({ err: error }, 'message not stored')
      reply.code(503)
      return { error: 'the chat room is unavailable, try again' }
    }
  })

  // The long poll (Tornado's MessageUpdatesHandler).
  app.asyncRoute<{ Querystring: { cursor?: number } }>({
    method: 'GET',
    url: '/a/message/updates',
    schema: {
      querystring: {
        type: 'object',
        properties: { cursor: { type: 'integer', minimum: 0 } },
        additionalProperties: false
      }
    },
    timeout: options.pollTimeout ?? 30_000,
    // …but waiting is this route's job: no hint for it…
    warnUnfinished: false,
    // …and a poll that waited its whole time gets an empty list, not a 504: a normal long-poll
    // timeout, after which the page polls again.
    onWatchdog (_request, reply) {
      reply.finish({ messages: [] })
    },
    // The watchdog logs a hang report (a warning) each time it fires; for a long poll that is
    // routine, so this route logs errors only (so are the per-request lines of every poll).
    logLevel: 'error',
    handler (request, reply) {
      const cursor = request.query.cursor ?? 0
      const messages = room.since(cursor)
      if (messages.length > 0) return reply.finish({ messages })
      room.wait(reply, cursor)
      // However the reply ends — answered, timed out, or the browser left (Tornado's
      // on_connection_close; `reply.onClose(fn)` sees only that case) — off the list.
      reply.onEnd(() => room.leave(reply))
    }
  })
  return app
}
