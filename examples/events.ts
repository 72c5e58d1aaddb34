// Server-sent events: `GET /events` is a `text/event-stream` that never ends by itself. Events
// come from an in-process source (a clock, and whatever is POSTed to `/publish`); every open
// stream gets each one at once. `GET /` is a page that shows them live with `EventSource`.
//
// A stream has no total length, so its route turns the watchdog off (`timeout: 0`); what it
// must never do is stay open silently forever. The source sends a heartbeat comment
// (`: heartbeat`) to every stream every few seconds, and the route's `idleTimeout`, a little
// longer than that, cuts a stream that heard nothing at all: when the source hangs, its
// streams end and the browsers' `EventSource` reconnects. The heartbeat is the source's own,
// one timer for all streams, not a timer per stream: a timer per stream would keep a stream
// "alive" after its source died. `reply.onEnd` takes a stream off the source however it ends
// (the browser left, idleTimeout, close).
//
// `npm run events`: on http://127.0.0.1:8890/ (or $PORT). No internet needed.
import { pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute, { type AsyncReply } from 'fastify-async-route'

export interface StreamEvent {
  id: number
  /** The SSE event name: `tick` (the clock) or `message` (posted). */
  event: string
  data: string
}

/** One `text/event-stream` frame. `data` must not hold a newline (each line would need `data:`). */
function frame ({ id, event, data }: StreamEvent): string {
  return `id: ${id}\nevent: ${event}\ndata: ${data}\n\n`
}

/** The source: the open streams, the last events (for `Last-Event-ID`) and the heartbeat. */
export class EventHub {
  readonly recent: StreamEvent[] = []
  #streams = new Set<AsyncReply>()
  #lastId = 0
  #heartbeat: NodeJS.Timeout | null = null
  #paused = false

  /** `heartbeatMs`: how often every stream gets a `: heartbeat` comment; `keep`: events kept for reconnecting clients. */
  constructor (readonly heartbeatMs = 5_000, readonly keep = 100) {}

  /** How many streams are open. */
  get subscribers (): number {
    return this.#streams.size
  }

  /** Sends `reply` every event from now on (and the kept ones newer than `lastEventId`). */
  subscribe (reply: AsyncReply, lastEventId?: number): void {
    if (lastEventId !== undefined) {
      for (const event of this.recent) if (event.id > lastEventId) reply.write(frame(event))
    }
    this.#streams.add(reply)
    if (this.#heartbeat === null && !this.#paused) this.#startHeartbeat()
  }

  unsubscribe (reply: AsyncReply): void {
    this.#streams.delete(reply)
    if (this.#streams.size === 0) this.#stopHeartbeat()
  }

  /** Sends an event to every open stream (formatted once for all). */
  publish (event: string, data: string): StreamEvent {
    const published: StreamEvent = { id: ++this.#lastId, event, data: data.replace(/[\r\n]+/g, ' ') }
    this.recent.push(published)
    if (this.recent.length > this.keep) this.recent.shift()
    const chunk = frame(published)
    for (const reply of this.#streams) reply.write(chunk)
    return published
  }

  /** The source hangs: no heartbeat (nor clock tick) until `resume()`. Streams then end by idleTimeout. */
  pause (): void {
    this.#paused = true
    this.#stopHeartbeat()
  }

  resume (): void {
    this.#paused = false
    if (this.#streams.size > 0) this.#startHeartbeat()
  }

  get paused (): boolean {
    return this.#paused
  }

  /** Ends every stream (on close: before the plugin's close grace starts). */
  close (): void {
    for (const reply of this.#streams) reply.finish()
    this.#stopHeartbeat()
  }

  #startHeartbeat (): void {
    this.#heartbeat = setInterval(() => {
      for (const reply of this.#streams) reply.write(': heartbeat\n\n')
    }, this.heartbeatMs)
  }

  #stopHeartbeat (): void {
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat)
    this.#heartbeat = null
  }
}

export interface EventsOptions {
  /** The source; a new one (heartbeat every 5 s) by default. */
  hub?: EventHub
  /** A stream silent for this long is cut, ms; default 1.5 × the heartbeat. */
  idleTimeout?: number
  /** The clock publishes a `tick` event this often, ms; 0: no clock. Default 1,000. */
  clockMs?: number
  /** Fastify's own options (`logger`, …). */
  fastify?: FastifyServerOptions
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Server-sent events — fastify-async-route</title>
  <script src="/events.js" defer></script>
</head>
<body>
  <h1>Events <small id="status">connecting…</small></h1>
  <form id="publish" autocomplete="off">
    <input id="text" maxlength="500" placeholder="Publish a message…" aria-label="message" required>
    <button type="submit">Publish</button>
  </form>
  <ol id="events" reversed></ol>
</body>
</html>
`

// The page's side: EventSource reconnects by itself (after `retry:` ms), sending the last id
// it saw as `Last-Event-ID`; the server replays what it missed.
const SCRIPT = `'use strict'
const list = document.getElementById('events')
const status = document.getElementById('status')
const source = new EventSource('/events')
function show (event) {
  const item = document.createElement('li')
  item.dataset.id = event.lastEventId
  item.className = event.type
  item.textContent = event.type + ' #' + event.lastEventId + ': ' + event.data // text, never HTML
  list.prepend(item)
  while (list.children.length > 50) list.lastElementChild.remove()
}
source.addEventListener('tick', show)
source.addEventListener('message', show)
source.addEventListener('open', () => { status.textContent = 'live' })
source.addEventListener('error', () => { status.textContent = 'reconnecting…' })
document.getElementById('publish').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = document.getElementById('text')
  fetch('/publish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: input.value }) })
  input.value = ''
})
`

export async function buildEventsApp (options: EventsOptions = {}): Promise<FastifyInstance> {
  const hub = options.hub ?? new EventHub()
  const app = Fastify(options.fastify ?? { logger: true })
  // Registered before the plugin, so it runs before the close grace starts: streams end at
  // once on close instead of being held for the grace.
  app.addHook('preClose', (done) => { hub.close(); done() })
  await app.register(asyncRoute)

  const clockMs = options.clockMs ?? 1_000
  if (clockMs > 0) {
    const clock = setInterval(() => { if (!hub.paused) hub.publish('tick', new Date().toISOString()) }, clockMs)
    app.addHook('onClose', (_app, done) => { clearInterval(clock); done() })
  }

  for (const [url, type, body] of [['/', 'text/html', PAGE], ['/events.js', 'text/javascript', SCRIPT]]) {
    app.get(url as string, (_request, reply) => {
      reply.header('content-security-policy', "default-src 'self'").type(`${type as string}; charset=utf-8`).send(body)
    })
  }

  app.post<{ Body: { text: string } }>('/publish', {
    schema: {
      body: { type: 'object', required: ['text'], properties: { text: { type: 'string', minLength: 1, maxLength: 500 } } }
    }
  }, async (request) => hub.publish('message', request.body.text))

  app.asyncRoute<{ Headers: { 'last-event-id'?: string } }>({
    method: 'GET',
    url: '/events',
    timeout: 0, // a stream has no total length…
    idleTimeout: options.idleTimeout ?? Math.round(hub.heartbeatMs * 1.5), // …but its silence has
    warnUnfinished: false,
    handler (request, reply) {
      reply.headers({ 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' })
      reply.write('retry: 1000\n\n') // sends the head: the browser's EventSource is open
      const lastId = request.headers['last-event-id']
      hub.subscribe(reply, lastId !== undefined && /^\d+$/.test(lastId) ? Number(lastId) : undefined)
      // However the stream ends — the browser left, idleTimeout, close — off the source.
      reply.onEnd(() => hub.unsubscribe(reply))
    }
  })
  return app
}

// `tsx examples/events.ts`: listens on 127.0.0.1:$PORT (8890 by default).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const app = await buildEventsApp()
  const address = await app.listen({ port: Number(process.env.PORT ?? 8890), host: '127.0.0.1' })
  console.log(`events listening on ${address}/ (open it in a browser; curl -N ${address}/events)`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
  }
}
