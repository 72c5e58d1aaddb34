// Observability for async routes: OpenTelemetry traces and Prometheus metrics.
//
// - Tracing (examples/observability/tracing.ts): a server span per incoming request, a client
//   span per upstream try under it, and the upstream gets that trace's `traceparent`. The
//   plugin runs everything it does for a reply in the request's async context — its timers'
//   callbacks (`onWatchdog`, `onEnd` after a timeout), retries, the upstream requests — so
//   spans and log lines land in the right trace. Log lines carry `traceId` (a pino mixin).
// - Metrics (examples/observability/metrics.ts): prom-client, fed from
//   `app.asyncRoute.stats()` and the plugin's and undici's diagnostics channels; `GET /metrics`.
//
// The routes, against a small demo upstream started in the same process:
//   GET /quote          pipe(url) with retries: the demo upstream answers every third try 503
//   GET /poll?wait=ms   a long poll nobody answers: onWatchdog finishes it `{ messages: [] }`;
//                       at most 20 wait at once (maxPending), the next one is answered 503
//   GET /stream         relays an upstream that stalls after its first chunk: idleTimeout cuts it
//   GET /metrics        Prometheus text format
//   GET /stats          app.asyncRoute.stats()
//   GET /traces         the last finished spans (OTEL_TRACES_CONSOLE=1 prints them instead)
//
// `npm run observability`: on http://127.0.0.1:8891/ (or $PORT). No collector needed.
import { recentSpans, shutdownTracing, traceIds } from './observability/tracing.js' // first: before Fastify loads
import http from 'node:http'
import { pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import asyncRoute from 'fastify-async-route'
import { Registry } from 'prom-client'
import { asyncRouteMetrics } from './observability/metrics.js'

export const MAX_POLLERS = 20

/** An upstream that answers every third request 503 (`/quote`), or stalls after one chunk (`/stall`). */
export async function startDemoUpstream (): Promise<{ url: string, close: () => Promise<void> }> {
  let quotes = 0
  const server = http.createServer((req, res) => {
    if (req.url === '/stall') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first chunk, then nothing\n')
      return
    }
    if (++quotes % 3 === 0) {
      res.writeHead(503, { 'retry-after': '0' }).end('busy')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ quote: quotes }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  }
}

export async function buildObservedApp (upstream: string, options: FastifyServerOptions = { logger: { mixin: traceIds } }): Promise<FastifyInstance> {
  const app = Fastify(options)
  await app.register(asyncRoute, { timeout: 10_000, allowedOrigins: [upstream] })
  const registry = new Registry()
  const stopMetrics = asyncRouteMetrics(app, registry)
  app.addHook('onClose', async () => stopMetrics())

  app.asyncRoute({
    method: 'GET',
    url: '/quote',
    retry: { attempts: 3, minDelay: 10, maxDelay: 50 },
    handler (_request, reply) {
      return reply.pipe(`${upstream}/quote`)
    }
  })

  app.asyncRoute<{ Querystring: { wait?: string } }>({
    method: 'GET',
    url: '/poll',
    timeout: 25_000,
    maxPending: MAX_POLLERS,
    onWatchdog (_request, reply) {
      reply.finish({ messages: [] })
    },
    handler (request, reply) {
      const wait = Number(request.query.wait)
      if (Number.isInteger(wait) && wait > 0 && wait < 25_000) reply.setTimeout(wait)
    }
  })

  app.asyncRoute({
    method: 'GET',
    url: '/stream',
    idleTimeout: 300,
    handler (_request, reply) {
      return reply.pipe(`${upstream}/stall`)
    }
  })

  app.get('/metrics', async (_request, reply) => {
    reply.type(registry.contentType)
    return await registry.metrics()
  })
  app.get('/stats', async () => app.asyncRoute.stats())
  app.get('/traces', async () => recentSpans.spans)
  return app
}

// `tsx examples/observability.ts`: listens on 127.0.0.1:$PORT (8891 by default).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const upstream = await startDemoUpstream()
  const app = await buildObservedApp(upstream.url)
  const address = await app.listen({ port: Number(process.env.PORT ?? 8891), host: '127.0.0.1' })
  console.log(`observability listening on ${address}/ (try ${address}/quote, ${address}/poll?wait=500, ${address}/stream, then ${address}/metrics and ${address}/traces)`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      app.close().then(upstream.close).then(shutdownTracing).then(() => process.exit(0), () => process.exit(1))
    })
  }
}
