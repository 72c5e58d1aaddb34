// Prometheus metrics for async routes, with prom-client:
// - from `app.asyncRoute.stats()`, read at each scrape: replies by outcome, pending replies,
//   overload rejections (exactly the plugin's own counts);
// - from the plugin's diagnostics channels (`fastify-async-route:finish`, `:abort`,
//   `:timeout`): reply durations by route and outcome, timeouts by route and kind (the
//   watchdog or idleTimeout);
// - from undici's diagnostics channels: upstream latency (to the response head) by origin and
//   status, and retries by origin.
//
// The plugin has no retry channel: a retry is told from a first try by counting, per incoming
// request, the tries of each method and URL. The count lives in an AsyncLocalStorage store
// opened for each request (an `onRequest` hook); that works because the plugin starts every
// upstream request, retries included, in its request's async context. (A handler that fetches
// the same URL twice on purpose counts its second fetch as a retry.)
import { AsyncLocalStorage } from 'node:async_hooks'
import diagnostics from 'node:diagnostics_channel'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { HangReport } from 'fastify-async-route'

const PREFIX = 'fastify_async_route_'

/** What the plugin's channels publish. */
interface ReplyMessage {
  request: FastifyRequest
  report: HangReport
  /** `:timeout` only: FST_ASYNC_ROUTE_TIMEOUT (the watchdog) or FST_ASYNC_ROUTE_IDLE_TIMEOUT. */
  code?: string
}

/** The part of undici's request object the upstream metrics read. */
interface UndiciRequest {
  origin: string | URL
  method: string
  path: string
}

/** Per incoming request: tries sent so far, by `METHOD origin/path`. */
const triesOf = new AsyncLocalStorage<Map<string, number>>()

function routeOf (request: FastifyRequest): string {
  return request.routeOptions.url ?? 'unknown'
}

/**
 * Registers the metrics of `app`'s async routes in `registry` (call it before declaring the
 * routes: its `onRequest` hook must apply to them). Returns a function that stops listening
 * to the channels.
 */
export function asyncRouteMetrics (app: FastifyInstance, registry: Registry): () => void {
  const registers = [registry]
  const stats = (): ReturnType<FastifyInstance['asyncRoute']['stats']> => app.asyncRoute.stats()

  // -- from stats(), at each scrape (`registers: []`: registered here, not in the global registry) --
  registry.registerMetric(new Counter({
    name: `${PREFIX}replies_total`,
    help: 'Async replies that ended, by how they ended first (finished, timed_out, aborted, failed)',
    labelNames: ['outcome'],
    registers: [],
    collect () {
      const { finished, timedOut, aborted, failed } = stats()
      this.reset()
      this.inc({ outcome: 'finished' }, finished)
      this.inc({ outcome: 'timed_out' }, timedOut)
      this.inc({ outcome: 'aborted' }, aborted)
      this.inc({ outcome: 'failed' }, failed)
    }
  }))
  registry.registerMetric(new Counter({
    name: `${PREFIX}replies_started_total`,
    help: 'Async replies started (overload rejections excluded)',
    registers: [],
    collect () {
      this.reset()
      this.inc(stats().started)
    }
  }))
  registry.registerMetric(new Gauge({
    name: `${PREFIX}pending_replies`,
    help: 'Async replies open now (waiting to be finished)',
    registers: [],
    collect () {
      this.set(stats().pending)
    }
  }))
  registry.registerMetric(new Counter({
    name: `${PREFIX}overload_rejections_total`,
    help: 'Requests answered 503 FST_ASYNC_ROUTE_OVERLOADED because maxPending was reached',
    registers: [],
    collect () {
      this.reset()
      this.inc(stats().rejected)
    }
  }))

  // -- from the plugin's diagnostics channels --
  const durations = new Histogram({
    name: `${PREFIX}reply_duration_seconds`,
    help: 'Time from the start of an async reply to its end, by route and outcome (failed replies are not published)',
    labelNames: ['route', 'outcome'],
    buckets: [0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60],
    registers
  })
  const timeouts = new Counter({
    name: `${PREFIX}timeouts_total`,
    help: 'Async replies ended by a timer: kind "watchdog" (timeout) or "idle" (idleTimeout)',
    labelNames: ['route', 'kind'],
    registers
  })
  const onFinish = (message: unknown): void => {
    const { request, report } = message as ReplyMessage
    durations.observe({ route: routeOf(request), outcome: 'finished' }, report.elapsedMs / 1000)
  }
  const onAbort = (message: unknown): void => {
    const { request, report } = message as ReplyMessage
    durations.observe({ route: routeOf(request), outcome: 'aborted' }, report.elapsedMs / 1000)
  }
  const onTimeout = (message: unknown): void => {
    const { request, report, code } = message as ReplyMessage
    const route = routeOf(request)
    timeouts.inc({ route, kind: code === 'FST_ASYNC_ROUTE_IDLE_TIMEOUT' ? 'idle' : 'watchdog' })
    durations.observe({ route, outcome: 'timed_out' }, report.elapsedMs / 1000)
  }

  // -- from undici's diagnostics channels (upstream requests of async routes only) --
  const upstreamLatency = new Histogram({
    name: `${PREFIX}upstream_duration_seconds`,
    help: 'Time from sending an upstream request (each try) to its response head, by origin and status ("error": no response)',
    labelNames: ['origin', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers
  })
  const retries = new Counter({
    name: `${PREFIX}upstream_retries_total`,
    help: 'Upstream tries after the first (the plugin\'s retry policy), by origin',
    labelNames: ['origin'],
    registers
  })
  const sentAt = new WeakMap<UndiciRequest, number>()
  const onRequestCreate = (message: unknown): void => {
    const tries = triesOf.getStore()
    if (tries === undefined) return // not made for an incoming request
    const { request } = message as { request: UndiciRequest }
    sentAt.set(request, performance.now())
    const key = `${request.method} ${String(request.origin)}${request.path}`
    const sent = (tries.get(key) ?? 0) + 1
    tries.set(key, sent)
    if (sent > 1) retries.inc({ origin: String(request.origin) })
  }
  const observeUpstream = (request: UndiciRequest, status: string): void => {
    const started = sentAt.get(request)
    if (started === undefined) return
    sentAt.delete(request)
    upstreamLatency.observe({ origin: String(request.origin), status }, (performance.now() - started) / 1000)
  }
  const onRequestHeaders = (message: unknown): void => {
    const { request, response } = message as { request: UndiciRequest, response: { statusCode: number } }
    observeUpstream(request, String(response.statusCode))
  }
  const onRequestError = (message: unknown): void => {
    observeUpstream((message as { request: UndiciRequest }).request, 'error')
  }

  app.addHook('onRequest', (_request, _reply, done) => {
    triesOf.run(new Map(), done)
  })
  const subscriptions: Array<[string, (message: unknown) => void]> = [
    ['fastify-async-route:finish', onFinish],
    ['fastify-async-route:abort', onAbort],
    ['fastify-async-route:timeout', onTimeout],
    ['undici:request:create', onRequestCreate],
    ['undici:request:headers', onRequestHeaders],
    ['undici:request:error', onRequestError]
  ]
  for (const [name, listener] of subscriptions) diagnostics.subscribe(name, listener)
  return () => {
    for (const [name, listener] of subscriptions) diagnostics.unsubscribe(name, listener)
  }
}
