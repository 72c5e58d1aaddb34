// The server of the waiters benchmark: `node --expose-gc --import tsx bench/waiters-server.ts
// <chat|bare> <h1|h2>`. `chat` is the chat example (examples/chat) as it ships; `bare` is the
// baseline: a plain Fastify route that calls `reply.hijack()` and keeps the reply in a Set, and
// a POST that ends every held reply with the same JSON the chat sends, 1,000 per turn of
// the event loop like the chat. Both listen on
// 127.0.0.1 (HTTP/1.1, or h2c with many streams per session). `redis <h1|h2> <redis url>` is the
// chat with its room shared through Redis (examples/chat/redis-room.ts): the cluster mode runs
// several of these. IPC: 'count' → how many replies wait (and when the last one was answered),
// 'cpu' → the process's CPU time so far (µs), 'measure' → memory after GC (and a heap snapshot
// in $WAITERS_SNAPSHOT, when set).
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { writeHeapSnapshot } from 'node:v8'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import { buildChatApp, MessageBuffer } from '../examples/chat/chat.js'
import { RedisRoom } from '../examples/chat/redis-room.js'

const variant = process.argv[2]
const protocol = process.argv[3]
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with --expose-gc')

const fastify = {
  logger: false,
  ...(protocol === 'h2'
    ? {
        http2: true,
        // Many long polls per session: no stream limit worth the name, room for their state,
        // and no idle-session timeout while they wait.
        http: { settings: { maxConcurrentStreams: 100_000 }, maxSessionMemory: 4096 },
        http2SessionTimeout: 3_600_000
      }
    : {})
} as unknown as FastifyServerOptions

const room = new MessageBuffer()
let count: () => { waiting: number, pending: number }
let app: FastifyInstance

if (variant === 'chat') {
  const chat = await buildChatApp({ room, pollTimeout: 600_000, fastify })
  count = () => ({ waiting: room.waiting, pending: chat.asyncRoute.stats().pending })
  app = chat
} else if (variant === 'redis') {
  const shared = new RedisRoom({ url: process.argv[4] as string, log: { info: () => {}, warn: (message) => console.error(message) } })
  if (!await shared.ready(10_000)) throw new Error(`no Redis at ${String(process.argv[4])}`)
  const chat = await buildChatApp({ room: shared, pollTimeout: 600_000, fastify })
  count = () => ({ waiting: shared.waiting, pending: chat.asyncRoute.stats().pending })
  app = chat
} else if (variant === 'bare') {
  const bare = Fastify(fastify)
  const held = new Set<FastifyReply>()
  let lastId = 0
  let unanswered = 0 // woken, not yet answered
  bare.get('/', (_request, reply) => { reply.type('text/html').send('<!doctype html>') })
  bare.get('/a/message/updates', (_request, reply) => {
    reply.hijack()
    held.add(reply)
  })
  bare.post<{ Body: { body: string } }>('/a/message/new', (request) => {
    const message = { id: ++lastId, body: request.body.body, at: Date.now() }
    const body = JSON.stringify({ messages: [message] })
    const length = Buffer.byteLength(body)
    const woken = [...held]
    held.clear()
    unanswered += woken.length
    const wake = (from: number): void => { // 1,000 per turn of the event loop, as the chat does
      for (const reply of woken.slice(from, from + 1_000)) {
        reply.raw.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': length })
        reply.raw.end(body)
        unanswered--
      }
      if (from + 1_000 < woken.length) setImmediate(wake, from + 1_000)
    }
    wake(0)
    return message
  })
  count = () => ({ waiting: held.size, pending: held.size + unanswered })
  app = bare
} else {
  throw new Error(`unknown variant ${String(variant)}`)
}

// When the last reply held was answered (written to its socket or stream): whether the
// server or the client is the slower side of a wake-all.
let answeredAllAt = 0
let holding = false
let onAnsweredAll = (): void => {}
setInterval(() => {
  const { pending } = count()
  if (pending > 0) holding = true
  else if (holding) {
    holding = false
    answeredAllAt = performance.timeOrigin + performance.now()
    onAnsweredAll()
  }
}, 5).unref()

process.on('message', (message) => {
  if (message === 'count') {
    process.send?.({ ...count(), answeredAllAt })
  } else if (message === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send?.({ cpu: user + system })
  } else if (message === 'measure') {
    for (let i = 0; i < 4; i++) gc()
    const { heapUsed, rss } = process.memoryUsage()
    // WAITERS_SNAPSHOT=dir: a heap snapshot at each measure, to see what a waiter is made of.
    const dir = process.env.WAITERS_SNAPSHOT
    if (dir !== undefined && dir !== '') writeHeapSnapshot(`${dir}/${variant}-${protocol}-${count().waiting}.heapsnapshot`)
    process.send?.({ heapUsed, rss, ...count() })
  }
})
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))

// WAITERS_CPU_PROF=dir: a CPU profile of each publish, from the POST until every waiting
// reply was answered.
const profileDir = process.env.WAITERS_CPU_PROF
if (profileDir !== undefined && profileDir !== '') {
  const session = new Session()
  session.connect()
  const post = (method: string): Promise<any> => new Promise((resolve, reject) => {
    session.post(method, (error, result) => { if (error === null) resolve(result); else reject(error) })
  })
  await post('Profiler.enable')
  app.addHook('onRequest', async (request) => {
    if (request.method === 'POST') await post('Profiler.start')
  })
  onAnsweredAll = () => {
    void post('Profiler.stop').then(({ profile }: { profile: unknown }) => {
      writeFileSync(`${profileDir}/${variant}-${protocol}-${Date.now()}.cpuprofile`, JSON.stringify(profile))
    })
  }
}

await app.listen({ port: 0, host: '127.0.0.1', backlog: 4096 })
process.send?.({ port: (app.server.address() as { port: number }).port })
