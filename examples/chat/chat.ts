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
import asyncRoute, { type AsyncReply } from 'fastify-async-route'

/** How many waiting replies are answered per turn of the event loop. */
const WAKE_BATCH = 1_000

export interface Message {
  id: number
  body: string
  /** When the server received it, ms since the epoch. */
  at: number
}

/** The last `size` messages and the replies waiting for the next one (Tornado's `MessageBuffer`). */
export class MessageBuffer {
  readonly cache: Message[] = []
  /** Each waiting reply, with the cursor it waits after. */
  #waiters = new Map<AsyncReply, number>()
  #lastId = 0

  constructor (readonly size = 200) {}

  /** How many replies are waiting for a message. */
  get waiting (): number {
    return this.#waiters.size
  }

  /**
   * The messages newer than `cursor` (the id of the last message the page has). A cursor newer
   * than anything here comes from before a restart of the server: the page gets everything.
   */
  since (cursor: number): Message[] {
    if (cursor > this.#lastId) cursor = 0
    const first = this.cache.findIndex((message) => message.id > cursor)
    return first === -1 ? [] : this.cache.slice(first)
  }

  /** Keeps `reply` open until a message newer than `cursor` exists. */
  wait (reply: AsyncReply, cursor: number): void {
    this.#waiters.set(reply, cursor > this.#lastId ? 0 : cursor)
  }

  leave (reply: AsyncReply): void {
    this.#waiters.delete(reply)
  }

  /**
   * Stores a message and answers every waiting reply with what it has missed (`notify_all()`).
   * The replies are finished `WAKE_BATCH` at a time, one batch per turn of the event loop, so
   * that the answers already given go out (HTTP/2 sends a session's frames between turns)
   * while the rest are being written, and other requests are served in between.
   */
  add (body: string): Message {
    const message: Message = { id: ++this.#lastId, body, at: Date.now() }
    this.cache.push(message)
    if (this.cache.length > this.size) this.cache.splice(0, this.cache.length - this.size)
    const woken = this.#waiters
    this.#waiters = new Map()
    this.#wake(woken.entries())
    return message
  }

  #wake (woken: MapIterator<[AsyncReply, number]>): void {
    const answers = new Map<number, Message[]>() // most waiters share a cursor: one list for them
    for (let n = 0; n < WAKE_BATCH; n++) {
      const next = woken.next()
      if (next.done === true) return
      const [reply, cursor] = next.value
      let messages = answers.get(cursor)
      if (messages === undefined) answers.set(cursor, messages = this.since(cursor))
      reply.finish({ messages }) // ignored if it ended meanwhile (browser gone, watchdog)
    }
    setImmediate(() => this.#wake(woken))
  }
}

export interface ChatOptions {
  /** The room; a new one by default. */
  room?: MessageBuffer
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
  }, async (request) => room.add(request.body.body))

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
