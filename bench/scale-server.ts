// The server of the scale benchmark: `node --expose-gc --import tsx bench/scale-server.ts
// <variant> <timeoutMs>`. GET /hold is never answered by its handler: in the `async` variant an
// asyncRoute whose watchdog ends it with a 504; in the `bare` variant a plain Fastify route
// that only hijacks, keeps the reply in a Set and ends it from its own timer (the baseline).
// GET /warm answers at once (to warm both up). The `budgets` variant is `async` with all three
// budgets set (idleTimeout, twice the watchdog so that the watchdog answers; deadlineHeader;
// maxPending, above what is held). The `overload` variant serves the overload comparison:
// GET /ok finishes at once, GET /limited (maxPending 1) holds its first request (?hold=1) open
// for good, so that every later one is answered 503 OVERLOADED.
// With a third argument `h2`, the server speaks cleartext HTTP/2 (many streams per session).
// IPC: 'pending' → count, 'measure' → memory after GC, 'cpu' → process.cpuUsage() in µs.
import Fastify, { type FastifyReply, type FastifyServerOptions } from 'fastify'
import asyncRoute from '../plugin/index.js'

const variant = process.argv[2]
const timeout = Number(process.argv[3])
const h2 = process.argv[4] === 'h2'
const app = Fastify({
  logger: false,
  // As in the waiters benchmark: no stream limit worth the name, room for the streams' state,
  // and no idle-session timeout while they wait.
  ...(h2 ? { http2: true, http: { settings: { maxConcurrentStreams: 100_000 }, maxSessionMemory: 4096 }, http2SessionTimeout: 3_600_000 } : {})
} as unknown as FastifyServerOptions)
const held = new Set<FastifyReply>()
const body504 = JSON.stringify({ statusCode: 504, code: 'FST_ASYNC_ROUTE_TIMEOUT', error: 'Gateway Timeout', message: `The reply was not finished within ${timeout} ms` })

function endBare (reply: FastifyReply): void {
  held.delete(reply)
  reply.raw.writeHead(504, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body504) })
  reply.raw.end(body504)
}

if (variant === 'async' || variant === 'budgets') {
  await app.register(asyncRoute, variant === 'async'
    ? { timeout }
    : { timeout, idleTimeout: timeout * 2, deadlineHeader: 'x-request-timeout-ms', maxPending: 1_000_000 })
  app.asyncRoute({ method: 'GET', url: '/hold', handler () {} })
  app.asyncRoute({ method: 'GET', url: '/warm', handler (request, reply) { reply.finish('ok') } })
} else if (variant === 'bare') {
  app.get('/hold', (request, reply) => {
    reply.hijack()
    held.add(reply)
    setTimeout(endBare, timeout, reply)
  })
  app.get('/warm', (request, reply) => {
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 2 })
    reply.raw.end('ok')
  })
} else if (variant === 'overload') {
  await app.register(asyncRoute, { timeout: 0 })
  app.asyncRoute({ method: 'GET', url: '/ok', handler (request, reply) { reply.finish('ok') } })
  app.asyncRoute<{ Querystring: { hold?: string } }>({
    method: 'GET',
    url: '/limited',
    maxPending: 1,
    handler (request, reply) { if (request.query.hold === undefined) reply.finish('ok') }
  })
  app.asyncRoute({ method: 'GET', url: '/warm', handler (request, reply) { reply.finish('ok') } })
} else {
  throw new Error(`unknown variant ${String(variant)}`)
}

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with --expose-gc')

function pending (): number {
  return variant === 'bare' ? held.size : app.asyncRoute.stats().pending
}

process.on('message', (message) => {
  if (message === 'pending') {
    process.send?.({ pending: pending() })
  } else if (message === 'measure') {
    for (let i = 0; i < 4; i++) gc()
    const { heapUsed, rss, external } = process.memoryUsage()
    process.send?.({ heapUsed, rss, external, pending: pending() })
  } else if (message === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send?.({ cpuUs: user + system, stats: variant === 'bare' ? undefined : app.asyncRoute.stats() })
  }
})
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))

await app.listen({ port: 0, host: '127.0.0.1', backlog: 4096 })
process.send?.({ port: (app.server.address() as { port: number }).port })
