// The application under soak: one async route per behaviour, good and bad.
import Fastify, { type FastifyInstance } from 'fastify'
import { Agent } from 'undici'
import asyncRoute, { type AsyncReply } from '../../plugin/index.js'
import { LEVEL, logStream } from '../helpers/logs.js'

/** The short watchdog of the routes that are meant to time out. */
export const SHORT_TIMEOUT_MS = 300
/** Upstream headers timeout of `/stall`. */
export const STALL_HEADERS_TIMEOUT_MS = 150
const STREAM_CHUNK = Buffer.alloc(64 * 1024, 0x61)
const STREAM_CHUNKS = 32
/**
 * Server-sent events: the events of a healthy stream, their pace, and its idleTimeout — long
 * beside the pace, since an event loop stalled that long on a loaded machine is silence too —;
 * the idleTimeout that cuts a silent stream.
 */
export const SSE_EVENTS = 8
const SSE_EVENT_MS = 10
const SSE_HEALTHY_IDLE_MS = 2_000
export const SSE_IDLE_MS = 200
/** `/limited`: its maxPending, and how long each of its replies is held before finishing. */
export const LIMIT = 20
const LIMIT_HOLD_MS = 250

export interface LogCounts {
  warn: number
  error: number
}

export interface SoakApp {
  app: FastifyInstance
  url: string
  logs: LogCounts
  dispatcher: Agent
}

/** `clients`: the soak's concurrent clients; the upstream pool is sized for them. */
export async function startSoakApp (upstream: string, refused: string, clients: number): Promise<SoakApp> {
  const logs: LogCounts = { warn: 0, error: 0 }
  const stream = logStream((line) => {
    if (line.level === LEVEL.warn) logs.warn++
    else if (line.level === LEVEL.error) logs.error++
  })
  // Short keep-alive so that, once idle, every upstream socket must be gone: one that stays
  // open was leaked. One connection per client and some to spare: each client has one request
  // in flight, and the stalled kinds hold theirs until the watchdog; a smaller pool made healthy
  // requests wait for a connection until their own watchdog fired (504s at 200 clients).
  const dispatcher = new Agent({ keepAliveTimeout: 500, keepAliveMaxTimeout: 500, connections: clients + 32 })
  const app = Fastify({ logger: { level: 'warn', stream }, keepAliveTimeout: 5_000 })
  await app.register(asyncRoute, { timeout: 3_000, dispatcher, closeGrace: 1_000 })

  app.asyncRoute<{ Querystring: { size: string } }>({
    method: 'GET',
    url: '/ok/pipe-url',
    handler (request, reply) {
      void reply.pipe(`${upstream}/ok?size=${request.query.size}`)
    }
  })
  app.asyncRoute<{ Querystring: { size: string } }>({
    method: 'GET',
    url: '/ok/fetch-pipe',
    async handler (request, reply) {
      const res = await reply.fetch(`${upstream}/ok?size=${request.query.size}`)
      await reply.pipe(res)
    }
  })
  app.asyncRoute<{ Querystring: { size: string } }>({
    method: 'GET',
    url: '/ok/upstream',
    upstream: (request) => `${upstream}/ok?size=${request.query.size}`,
    handler (_request, reply, res) {
      void reply.pipe(res!)
    }
  })
  app.asyncRoute<{ Querystring: { size: string } }>({
    method: 'GET',
    url: '/ok/buffered',
    handler (request, reply) {
      reply.fetch(`${upstream}/ok?size=${request.query.size}`, (err, res) => {
        if (err) return reply.fail(err)
        res.body.arrayBuffer().then((body) => reply.finish(Buffer.from(body)), (error: unknown) => reply.fail(error))
      })
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/slow',
    timeout: SHORT_TIMEOUT_MS,
    async handler (_request, reply) {
      const res = await reply.fetch(`${upstream}/slow`)
      reply.finish(await res.body.text())
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/refuse',
    handler (_request, reply) {
      reply.fetch(`${refused}/`, (err) => {
        if (err) return reply.fail(err)
        reply.finish('unexpected')
      })
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/stall',
    async handler (_request, reply) {
      const res = await reply.fetch(`${upstream}/stall`, { headersTimeout: STALL_HEADERS_TIMEOUT_MS })
      await reply.pipe(res)
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/reset',
    handler (_request, reply) {
      void reply.pipe(`${upstream}/reset`)
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/forget',
    timeout: SHORT_TIMEOUT_MS,
    handler () {
      // Forgets reply.finish() on purpose.
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/throw',
    async handler () {
      await new Promise((resolve) => setImmediate(resolve))
      throw new Error('handler failed on purpose')
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/twice',
    handler (_request, reply) {
      setImmediate(() => {
        reply.finish('first')
        reply.finish('second')
      })
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/hold',
    handler (_request, reply) {
      // Sends the head and never finishes: only the client leaving ends it.
      void reply.flush()
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/stream',
    async handler (_request, reply) {
      reply.header('content-type', 'application/octet-stream')
      for (let i = 0; i < STREAM_CHUNKS && !reply.finished; i++) {
        if (!reply.write(STREAM_CHUNK)) await reply.flush()
        // Paced, so that a client leaving after the first chunk leaves before the end.
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      reply.finish()
    }
  })

  // Forwarded POSTs: a parsed (buffered) body sent again, and a streamed one.
  app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: 4 * 1024 * 1024 }, (_request, body, done) => done(null, body))
    scope.addContentTypeParser('application/x-soak-stream', (_request, payload, done) => done(null, payload))
    scope.asyncRoute<{ Querystring: { size: string } }>({
      method: 'POST',
      url: '/forward/post',
      handler (request, reply) {
        return reply.forward(`${upstream}/echo?size=${request.query.size}`)
      }
    })
  })
  // A flaky upstream: a 503, then a reset, then the answer; three tries get it.
  const retry = { attempts: 3, minDelay: 1, maxDelay: 20 }
  app.asyncRoute<{ Querystring: { size: string, id: string } }>({
    method: 'GET',
    url: '/flaky/pipe-url',
    retry,
    handler (request, reply) {
      return reply.pipe(`${upstream}/flaky?size=${request.query.size}&id=${request.query.id}`)
    }
  })
  app.asyncRoute<{ Querystring: { size: string, id: string } }>({
    method: 'GET',
    url: '/flaky/fetch',
    async handler (request, reply) {
      const res = await reply.fetch(`${upstream}/flaky?size=${request.query.size}&id=${request.query.id}`, { retry })
      await reply.pipe(res)
    }
  })
  app.asyncRoute<{ Querystring: { size: string, id: string } }>({
    method: 'GET',
    url: '/flaky/forward',
    retry,
    handler (request, reply) {
      return reply.forward(`${upstream}/flaky?size=${request.query.size}&id=${request.query.id}`)
    }
  })
  // Server-sent events with the watchdog off and an idleTimeout: a healthy stream sends its
  // events (a heartbeat comment between each) and finishes; a silent one sends one event, then
  // its source goes silent and idleTimeout cuts it.
  const sse = (reply: AsyncReply): void => {
    reply.headers({ 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
    reply.write('retry: 1000\n\n')
  }
  app.asyncRoute({
    method: 'GET',
    url: '/sse/healthy',
    timeout: 0,
    idleTimeout: SSE_HEALTHY_IDLE_MS,
    handler (_request, reply) {
      sse(reply)
      let id = 0
      const timer = setInterval(() => {
        if (++id > SSE_EVENTS) return reply.finish()
        reply.write(`id: ${id}\ndata: event ${id}\n\n: heartbeat\n\n`)
      }, SSE_EVENT_MS)
      reply.onEnd(() => clearInterval(timer))
    }
  })
  app.asyncRoute({
    method: 'GET',
    url: '/sse/silent',
    timeout: 0,
    idleTimeout: SSE_IDLE_MS,
    handler (_request, reply) {
      sse(reply)
      reply.write('id: 1\ndata: event 1\n\n')
    }
  })
  // A route with its own maxPending, for the overload phase: each reply is held a while.
  app.asyncRoute({
    method: 'GET',
    url: '/limited',
    maxPending: LIMIT,
    handler (_request, reply) {
      const timer = setTimeout(() => reply.finish('ok'), LIMIT_HOLD_MS)
      reply.onEnd(() => clearTimeout(timer))
    }
  })

  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url, logs, dispatcher }
}

export const STREAM_BYTES = STREAM_CHUNK.length * STREAM_CHUNKS
