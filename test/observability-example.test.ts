// examples/observability.ts, started as a user starts it (`tsx`, PORT=0): `/metrics` answers
// the counts `app.asyncRoute.stats()` gives, timeouts by kind, retries and upstream latency by
// origin; `/traces` shows each upstream try under its request's server span.
import t from 'tap'
import { startExample } from './helpers/example.js'
import { request, sendOnly, sleep } from './helpers/client.js'

const MAX_POLLERS = 20 // examples/observability.ts

/** Prometheus text format → `name{labels}` → value (no comments, no buckets). */
function parseMetrics (text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.includes('_bucket{')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

async function json (url: string): Promise<any> {
  const res = await request(url)
  return JSON.parse(res.body)
}

t.test('tsx examples/observability.ts: /metrics has the counts stats() gives, /traces the spans', async (t) => {
  const { child, address, exited } = await startExample(t, 'examples/observability.ts')

  // Every third upstream answer is a 503: the third quote is retried once.
  for (let i = 0; i < 4; i++) t.equal((await request(`${address}/quote`)).statusCode, 200, 'a quote')
  const polls = await Promise.all([1, 2, 3].map(() => request(`${address}/poll?wait=100`)))
  t.same(polls.map((res) => res.body), ['{"messages":[]}', '{"messages":[]}', '{"messages":[]}'], 'onWatchdog answered the polls')
  const stream = await request(`${address}/stream`)
  t.equal(stream.complete, false, 'idleTimeout cut the stalled stream')

  // maxPending: the route's pollers waiting, the next one is turned away; then they all leave.
  const waiting = await Promise.all(Array.from({ length: MAX_POLLERS }, () => sendOnly(`${address}/poll?wait=5000`)))
  for (let i = 0; i < 200 && (await json(`${address}/stats`)).pending < MAX_POLLERS; i++) await sleep(10)
  const waitingMetrics = parseMetrics((await request(`${address}/metrics`)).body)
  t.equal(waitingMetrics.get('fastify_async_route_pending_replies'), MAX_POLLERS, 'pending replies while they wait')
  t.equal((await request(`${address}/poll`)).statusCode, 503, 'overloaded')
  for (const req of waiting) req.destroy()
  for (let i = 0; i < 200 && (await json(`${address}/stats`)).pending > 0; i++) await sleep(10)

  const stats = await json(`${address}/stats`)
  t.same(stats, { started: 28, finished: 4, timedOut: 4, aborted: MAX_POLLERS, failed: 0, rejected: 1, pending: 0 })
  const res = await request(`${address}/metrics`)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const metrics = parseMetrics(res.body)
  t.equal(metrics.get('fastify_async_route_replies_total{outcome="finished"}'), stats.finished)
  t.equal(metrics.get('fastify_async_route_replies_total{outcome="timed_out"}'), stats.timedOut)
  t.equal(metrics.get('fastify_async_route_replies_total{outcome="aborted"}'), stats.aborted)
  t.equal(metrics.get('fastify_async_route_replies_total{outcome="failed"}'), stats.failed)
  t.equal(metrics.get('fastify_async_route_replies_started_total'), stats.started)
  t.equal(metrics.get('fastify_async_route_pending_replies'), stats.pending)
  t.equal(metrics.get('fastify_async_route_overload_rejections_total'), stats.rejected)
  t.equal(metrics.get('fastify_async_route_timeouts_total{route="/poll",kind="watchdog"}'), 3)
  t.equal(metrics.get('fastify_async_route_timeouts_total{route="/stream",kind="idle"}'), 1)
  t.equal(metrics.get('fastify_async_route_reply_duration_seconds_count{route="/quote",outcome="finished"}'), 4)
  t.equal(metrics.get('fastify_async_route_reply_duration_seconds_count{route="/poll",outcome="aborted"}'), MAX_POLLERS)
  const origin = [...metrics.keys()].find((key) => key.startsWith('fastify_async_route_upstream_retries_total'))
  t.equal(origin !== undefined ? metrics.get(origin) : undefined, 1, 'one retry')
  const upstream = /origin="([^"]+)"/.exec(origin ?? '')?.[1]
  t.equal(metrics.get(`fastify_async_route_upstream_duration_seconds_count{origin="${upstream}",status="200"}`), 5, 'four quotes and the stalled stream')
  t.equal(metrics.get(`fastify_async_route_upstream_duration_seconds_count{origin="${upstream}",status="503"}`), 1, 'the try that was retried')

  const spans = await json(`${address}/traces`) as Array<{ kind: number, traceId: string, spanId: string, parentSpanId: string | null, attributes: Record<string, unknown> }>
  const tries = spans.filter((span) => span.kind === 2 && span.attributes['url.full'] === `${upstream}/quote`)
  t.equal(tries.length, 5, 'a client span per upstream try')
  for (const upstreamTry of tries) {
    const parent = spans.find((span) => span.spanId === upstreamTry.parentSpanId)
    t.match(parent, { kind: 1, traceId: upstreamTry.traceId, attributes: { 'url.path': '/quote' } }, 'under its request\'s server span')
  }

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
})
