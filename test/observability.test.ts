// Request context with the real OpenTelemetry SDK: every upstream try is a client span under
// its own request's server span (and the upstream gets that trace's `traceparent`), and every
// callback the plugin runs from a timer or a socket event sees its own request's active span,
// also when many replies of one route wait on one shared timer.
import t from 'tap'
import { activeSpanIds, parseTraceparent, upstreamSpans } from './helpers/tracing.js'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AsyncRoutePluginOptions } from '../plugin/index.js'
import { captureLogs, type LogLine } from './helpers/logs.js'
import type { Teardown } from './helpers/context.js'
import { asyncGet } from './helpers/routes.js'

// Loaded after the instrumentations were registered (see helpers/tracing.ts).
const { default: Fastify } = await import('fastify')
const { default: asyncRoute } = await import('../plugin/index.js')
await import('./helpers/app.js') // an unhandled rejection or uncaught exception fails the run
const { startUpstream } = await import('./helpers/upstream.js')
const { request, sleep } = await import('./helpers/client.js')

type SpanIds = ReturnType<typeof activeSpanIds>

/** Where each request was seen, by request id: `handler`, `onWatchdog`, `onEnd`… */
class Sightings {
  readonly #seen = new Map<string, Map<string, SpanIds>>()

  note (request: FastifyRequest, where: string): void {
    let byPlace = this.#seen.get(request.id)
    if (byPlace === undefined) this.#seen.set(request.id, byPlace = new Map())
    byPlace.set(where, activeSpanIds())
  }

  ids (): string[] {
    return [...this.#seen.keys()]
  }

  of (id: string, where: string): SpanIds | undefined {
    return this.#seen.get(id)?.get(where)
  }
}

interface TracedApp {
  app: FastifyInstance
  url: string
  logs: LogLine[]
}

/** A Fastify app whose log lines carry the active span's ids (a pino mixin), as a traced app's do. */
async function startTracedApp (test: Teardown, options: AsyncRoutePluginOptions, setup: (app: FastifyInstance) => void): Promise<TracedApp> {
  const { logs, logger } = captureLogs('info')
  const app = Fastify({ logger: { ...logger, mixin: activeSpanIds } })
  await app.register(asyncRoute, options)
  setup(app)
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  test.teardown(() => app.close())
  return { app, url, logs }
}

const RETRY = { attempts: 3, minDelay: 1, maxDelay: 5 }

t.test('each try of each upstream request is a client span under its own request\'s server span', async (t) => {
  // Every request's first two tries are answered 503: its third is the one relayed.
  const triesOf = new Map<string, Array<{ traceId: string, spanId: string }>>()
  const up = await startUpstream((req, res) => {
    const id = new URL(req.url ?? '/', 'http://x').searchParams.get('id') ?? '?'
    const tries = triesOf.get(id) ?? []
    triesOf.set(id, tries)
    tries.push(parseTraceparent(req.headers.traceparent))
    if (tries.length < 3) {
      res.statusCode = 503
      res.end('busy')
    } else {
      res.end(`ok:${id}`)
    }
  })
  t.teardown(up.close)
  const seen = new Sightings()
  const target = (request: FastifyRequest): string => `${up.origin}/x?id=${request.id}`
  const { url } = await startTracedApp(t, {}, (app) => {
    asyncGet(app, '/fetch', {
      retry: RETRY,
      async handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
        reply.fetch(target(request), (error, res) => {
          seen.note(request, 'fetch callback')
          if (error !== null) return reply.fail(error)
          return res.body.text().then((text) => reply.finish(text))
        })
      }
    })
    asyncGet(app, '/pipe', {
      retry: RETRY,
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
        return reply.pipe(target(request))
      }
    })
    asyncGet(app, '/forward', {
      retry: RETRY,
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
        // forward() relays the incoming headers, the test client's `traceparent` included: the
        // undici instrumentation adds its own, and the upstream would get two.
        return reply.forward(target(request), { headers: { traceparent: null, tracestate: null } })
      }
    })
    asyncGet(app, '/option', {
      retry: RETRY,
      upstream (request) {
        seen.note(request, 'handler')
        return target(request)
      },
      handler (request, reply, res) {
        seen.note(request, 'after upstream')
        reply.onEnd(() => seen.note(request, 'onEnd'))
        return reply.pipe(res)
      }
    })
  })

  for (const path of ['/fetch', '/pipe', '/forward', '/option']) {
    // One after another (each on the keep-alive socket the first opened), then side by side.
    for (let i = 0; i < 3; i++) {
      const res = await request(`${url}${path}`)
      t.equal(res.statusCode, 200, `${path}: relayed the third try`)
    }
    const together = await Promise.all([1, 2, 3].map(() => request(`${url}${path}`)))
    t.same(together.map((res) => res.statusCode), [200, 200, 200], `${path}: side by side`)
  }

  const ids = seen.ids()
  t.equal(ids.length, 24)
  const traces = new Set(ids.map((id) => seen.of(id, 'handler')?.traceId))
  t.equal(traces.size, 24, 'each request has a trace of its own')
  const spans = upstreamSpans()
  t.equal(spans.length, 72, 'one client span per try')
  for (const id of ids) {
    const server = seen.of(id, 'handler') as SpanIds
    const tries = triesOf.get(id) ?? []
    t.equal(tries.length, 3, `${id}: three tries`)
    t.ok(tries.every((sent) => sent.traceId === server.traceId), `${id}: every try carried its own trace's traceparent`)
    const mine = spans.filter((span) => String(span.attributes['url.full']).endsWith(`id=${id}`))
    t.equal(mine.length, 3, `${id}: a client span per try`)
    t.ok(mine.every((span) => span.spanContext().traceId === server.traceId && span.parentSpanContext?.spanId === server.spanId),
      `${id}: each under the request's server span`)
    t.same(new Set(tries.map((sent) => sent.spanId)), new Set(mine.map((span) => span.spanContext().spanId)),
      `${id}: each try's traceparent names its own client span`)
    for (const where of ['fetch callback', 'after upstream', 'onEnd']) {
      const there = seen.of(id, where)
      if (there !== undefined) t.same(there, server, `${id}: ${where} ran in the request's context`)
    }
  }
})

t.test('callbacks run from shared timers see their own request\'s context', async (t) => {
  const seen = new Sightings()
  const { url, logs } = await startTracedApp(t, {}, (app) => {
    asyncGet(app, '/poll', {
      timeout: 150,
      onWatchdog (request, reply) {
        seen.note(request, 'onWatchdog')
        reply.finish({ messages: [] })
      },
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
      }
    })
    asyncGet(app, '/silent', {
      timeout: 0,
      idleTimeout: 100,
      onWatchdog (request) {
        seen.note(request, 'onWatchdog')
      },
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
      }
    })
    asyncGet(app, '/forgotten', {
      timeout: 250,
      warnUnfinished: 40,
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
      }
    })
  })
  const answers: Array<Promise<{ statusCode: number }>> = []
  for (const path of ['/poll', '/silent', '/forgotten']) {
    for (let i = 0; i < 4; i++) {
      answers.push(request(`${url}${path}`))
      await sleep(20)
    }
  }
  const statuses = (await Promise.all(answers)).map((res) => res.statusCode)
  t.same(statuses, [200, 200, 200, 200, 504, 504, 504, 504, 504, 504, 504, 504])

  const ids = seen.ids()
  t.equal(ids.length, 12)
  for (const id of ids) {
    const server = seen.of(id, 'handler') as SpanIds
    t.not(server.traceId, '-')
    const watchdog = seen.of(id, 'onWatchdog')
    if (watchdog !== undefined) t.same(watchdog, server, `${id}: onWatchdog ran in the request's context`)
    t.same(seen.of(id, 'onEnd'), server, `${id}: onEnd after the timeout ran in the request's context`)
    const lines = logs.filter((line) => line.reqId === id && line.level === 40)
    t.ok(lines.length > 0, `${id}: warned`)
    for (const line of lines) t.equal(line.traceId, server.traceId, `${id}: "${line.msg.slice(0, 40)}…" logged in the request's context`)
  }
  const unfinished = logs.filter((line) => line.msg.includes('did you forget reply.finish()'))
  t.equal(unfinished.length, 4, 'the warnUnfinished sweep warned once per forgotten reply')
})

t.test('replies ended by the close grace run their onEnd in their own context', async (t) => {
  const seen = new Sightings()
  const { app, url } = await startTracedApp(t, { closeGrace: 100 }, (app) => {
    asyncGet(app, '/wait', {
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
      }
    })
  })
  const answers = [1, 2, 3].map(() => request(`${url}/wait`))
  while (seen.ids().length < 3) await sleep(5)
  await app.close()
  t.same((await Promise.all(answers)).map((res) => res.statusCode), [503, 503, 503])
  for (const id of seen.ids()) t.same(seen.of(id, 'onEnd'), seen.of(id, 'handler'), `${id}: onEnd in its own context`)
})

t.test('failures reported from another request\'s socket are logged, and end the reply, in their own request\'s context', async (t) => {
  // The first request of each id opens the keep-alive socket; every later one is cut mid-way,
  // so that undici reports its failure from a socket another request opened.
  let served = 0
  const up = await startUpstream((req, res) => {
    if (++served === 1) return res.end('ok')
    req.socket.destroy()
  })
  t.teardown(up.close)
  const seen = new Sightings()
  const { url, logs } = await startTracedApp(t, {}, (app) => {
    asyncGet(app, '/pipe', {
      handler (request, reply) {
        seen.note(request, 'handler')
        reply.onEnd(() => seen.note(request, 'onEnd'))
        return reply.pipe(`${up.origin}/x`)
      }
    })
  })
  const first = await request(`${url}/pipe`)
  t.equal(first.statusCode, 200)
  for (let i = 0; i < 3; i++) t.equal((await request(`${url}/pipe`)).statusCode, 502)
  const ids = seen.ids()
  t.equal(ids.length, 4)
  for (const id of ids.slice(1)) {
    const server = seen.of(id, 'handler') as SpanIds
    t.same(seen.of(id, 'onEnd'), server, `${id}: onEnd in its own context`)
    const errors = logs.filter((line) => line.reqId === id && line.level === 50)
    t.equal(errors.length, 1, `${id}: the 502 was logged`)
    t.equal(errors[0]?.traceId, server.traceId, `${id}: in its own trace`)
  }
})
