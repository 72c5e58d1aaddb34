// The server-sent events example (examples/events.ts), over real sockets: events and
// heartbeats arrive, heartbeats keep a stream past its idleTimeout, a stream whose source goes
// silent is cut by idleTimeout, a client that leaves unsubscribes, Last-Event-ID replays, and
// close ends the streams at once.
import type http from 'node:http'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { buildEventsApp, EventHub, type StreamEvent } from '../examples/events.js'
import { closeTimed } from './helpers/app.js' // (importing it also makes unhandled rejections fail the run)
import { startExample } from './helpers/example.js'
import { openRequest, request, sleep, waitFor } from './helpers/client.js'

const HEARTBEAT_MS = 50
/** 12 heartbeats: slack for an event loop stalled on a loaded machine, still short. */
const IDLE_MS = 600

interface Events { app: FastifyInstance, hub: EventHub, url: string }

async function startEvents (t: { teardown: (fn: () => unknown) => void }, clockMs = 0): Promise<Events> {
  const hub = new EventHub(HEARTBEAT_MS)
  const app = await buildEventsApp({ hub, idleTimeout: IDLE_MS, clockMs, fastify: { logger: false } })
  t.teardown(() => app.close())
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, hub, url }
}

/** An open `text/event-stream`, parsed as it arrives. */
interface Stream {
  res: http.IncomingMessage
  events: StreamEvent[]
  heartbeats: number
  /** When the last chunk arrived (Date.now()). */
  lastDataAt: number
  /** Resolves when the response ends or is cut: `complete` tells which. */
  closed: Promise<{ complete: boolean }>
  leave: () => void
}

async function openStream (url: string, headers: Record<string, string> = {}): Promise<Stream> {
  const { req, res } = await openRequest(`${url}/events`, { headers })
  const stream: Stream = { res, events: [], heartbeats: 0, lastDataAt: Date.now(), closed: Promise.resolve({ complete: false }), leave: () => req.destroy() }
  let buffer = ''
  let ended = false
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => {
    buffer += chunk
    stream.lastDataAt = Date.now()
    let end: number
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      if (block === ': heartbeat') { stream.heartbeats++; continue }
      const fields = Object.fromEntries(block.split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]))
      if (fields.id !== undefined) stream.events.push({ id: Number(fields.id), event: String(fields.event), data: String(fields.data) })
    }
  })
  res.on('end', () => { ended = true })
  res.on('error', () => {})
  stream.closed = new Promise((resolve) => res.on('close', () => resolve({ complete: ended && res.complete })))
  return stream
}

async function publish (url: string, text: string): Promise<StreamEvent> {
  const res = await request(`${url}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text }) })
  if (res.statusCode !== 200) throw new Error(`publish answered ${res.statusCode}: ${res.body}`)
  return JSON.parse(res.body) as StreamEvent
}

t.test('the page and its script are served', async (t) => {
  const { url } = await startEvents(t)
  const page = await request(`${url}/`)
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /<script src="\/events.js"/)
  const script = await request(`${url}/events.js`)
  t.match(script.headers['content-type'], /^text\/javascript/)
  t.match(script.body, /new EventSource\('\/events'\)/)
})

t.test('events, clock ticks and heartbeats arrive on every open stream', async (t) => {
  const { app, hub, url } = await startEvents(t, 100)
  const [one, two] = await Promise.all([openStream(url), openStream(url)])
  t.equal(one.res.statusCode, 200)
  t.equal(one.res.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(one.res.headers['cache-control'], 'no-store')
  await waitFor(() => hub.subscribers === 2, 2000, 'two subscribers')
  t.equal(app.asyncRoute.pending().length, 2)

  const sent = await publish(url, 'hello\nthere')
  t.match(sent, { event: 'message', data: 'hello there' }, 'a newline cannot break the frame')
  for (const stream of [one, two]) {
    await waitFor(() => stream.events.some((event) => event.id === sent.id), 2000, 'the posted event')
    t.same(stream.events.find((event) => event.id === sent.id), sent)
  }
  await waitFor(() => one.heartbeats >= 2 && one.events.filter((event) => event.event === 'tick').length >= 2, 3000, 'heartbeats and ticks')
  const ticks = one.events.filter((event) => event.event === 'tick')
  t.ok(ticks.every((tick) => !Number.isNaN(Date.parse(tick.data))), 'a tick carries the time')
  const ids = one.events.map((event) => event.id)
  t.same(ids, [...ids].sort((a, b) => a - b), 'in order')
  one.leave()
  two.leave()
  await waitFor(() => hub.subscribers === 0 && app.asyncRoute.pending().length === 0, 2000, 'both to leave')
})

t.test('heartbeats keep a stream past its idleTimeout; a source that goes silent gets it cut', async (t) => {
  const { app, hub, url } = await startEvents(t)
  const stream = await openStream(url)
  await waitFor(() => hub.subscribers === 1, 2000, 'the subscriber')
  await sleep(IDLE_MS * 2.5)
  t.equal(hub.subscribers, 1, 'still open after 2.5 × idleTimeout')
  t.ok(stream.heartbeats >= 5, `heartbeats arrived (${stream.heartbeats})`)
  t.match(app.asyncRoute.stats(), { timedOut: 0, pending: 1 })

  hub.pause()
  const heartbeats = stream.heartbeats
  const { complete } = await stream.closed
  const silent = Date.now() - stream.lastDataAt
  t.notOk(complete, 'cut, not a clean end: EventSource reconnects')
  t.ok(silent >= IDLE_MS - 50 && silent < IDLE_MS + 2000, `cut about idleTimeout after the last heartbeat (${silent} ms)`)
  t.ok(stream.heartbeats - heartbeats <= 1, 'nothing after the pause (bar one in flight)')
  await waitFor(() => hub.subscribers === 0, 2000, 'the cut stream to unsubscribe')
  t.same(app.asyncRoute.pending(), [])
  t.match(app.asyncRoute.stats(), { timedOut: 1, aborted: 0, pending: 0 })

  hub.resume()
  const again = await openStream(url)
  await waitFor(() => again.heartbeats >= 1, 2000, 'heartbeats again once the source is back')
  again.leave()
})

t.test('a client that leaves unsubscribes: subscribers back to 0, pending() empty', async (t) => {
  const { app, hub, url } = await startEvents(t)
  const streams = await Promise.all(Array.from({ length: 5 }, () => openStream(url)))
  await waitFor(() => hub.subscribers === 5, 2000, 'five subscribers')
  streams[0]?.leave()
  await waitFor(() => hub.subscribers === 4 && app.asyncRoute.pending().length === 4, 2000, 'one to leave')
  const sent = await publish(url, 'to the others')
  for (const stream of streams.slice(1)) await waitFor(() => stream.events.some((event) => event.id === sent.id), 2000, 'the event')
  for (const stream of streams.slice(1)) stream.leave()
  await waitFor(() => hub.subscribers === 0 && app.asyncRoute.pending().length === 0, 2000, 'all to leave')
  t.match(app.asyncRoute.stats(), { started: 5, aborted: 5, timedOut: 0, failed: 0, pending: 0 })
})

t.test('Last-Event-ID: a reconnecting client gets what it missed', async (t) => {
  const { url } = await startEvents(t)
  const sent = [await publish(url, 'one'), await publish(url, 'two'), await publish(url, 'three')]
  const stream = await openStream(url, { 'last-event-id': String(sent[0]?.id) })
  await waitFor(() => stream.events.length === 2, 2000, 'the replay')
  t.same(stream.events, sent.slice(1))
  const fresh = await openStream(url, { 'last-event-id': 'nonsense' })
  await sleep(HEARTBEAT_MS * 2)
  t.same(fresh.events, [], 'an id that is not a number: no replay')
  stream.leave()
  fresh.leave()
})

t.test('close ends every stream at once, cleanly', async (t) => {
  const { app, hub, url } = await startEvents(t)
  const streams = await Promise.all([openStream(url), openStream(url)])
  await waitFor(() => hub.subscribers === 2, 2000, 'two subscribers')
  t.ok(await closeTimed(app) < 2000, 'no close grace spent on the streams')
  for (const stream of streams) t.same(await stream.closed, { complete: true })
  t.match(app.asyncRoute.stats(), { finished: 2, pending: 0 })
  t.equal(hub.subscribers, 0)
})

t.test('tsx examples/events.ts listens on $PORT, serves the page, stops on SIGTERM', async (t) => {
  const { child, address, exited } = await startExample(t, 'examples/events.ts')
  const page = await request(`${address}/`)
  t.equal(page.statusCode, 200)
  const stream = await openStream(address)
  t.equal(stream.res.statusCode, 200)
  child.kill('SIGTERM')
  t.same(await stream.closed, { complete: true }, 'the open stream ends cleanly on close')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
})
