// One server under test per process: `node --import tsx bench/servers.ts <target> <upstream>`.
// Every server listens on 127.0.0.1, forwards `GET <path>` to `<upstream><path>` (or answers
// JSON itself for the no-upstream targets; the `-post` targets forward `POST <path>` with its
// `application/octet-stream` body streamed through a pass-through parser). IPC: first `{ port, node }` (or `{ error }` if the
// server could not start), then `'cpu'` → `process.cpuUsage()` (user + system, µs, all threads),
// `'collections'` → how many major (mark-compact) collections V8 has made so far.
import { EventEmitter } from 'node:events'
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'
import http, { type OutgoingHttpHeaders } from 'node:http'
import Fastify, { type FastifyInstance } from 'fastify'
import replyFrom from '@fastify/reply-from'
import { Pool, request, type Dispatcher } from 'undici'
import { JSON_BODY } from './common.js'
import { isTarget, type Target } from './targets.js'

// BENCH_PLUGIN: another copy of the plugin sources to measure (`--baseline=` of index.ts).
const pluginPath = process.env.BENCH_PLUGIN ?? '../plugin/index.js'
const { default: asyncRoute } = await import(pluginPath) as typeof import('../plugin/index.js')
type AsyncRouteHandler = import('../plugin/index.js').AsyncRouteHandler

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization'])

/** undici 8, which needs Node ≥ 22.19 (it fails to load on older Node). */
async function undici8 (): Promise<typeof import('undici8')> {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  if (major < 22 || (major === 22 && minor < 19)) throw new Error(`undici 8 needs Node ≥ 22.19, the server runs ${process.version} (see --node=PATH)`)
  return await import('undici8')
}

/** Registers the plugin (with `dispatcher`, if any) and one asyncRoute for `method /*`. */
async function asyncProxy (app: FastifyInstance, method: 'GET' | 'POST', handler: AsyncRouteHandler, dispatcher?: Dispatcher): Promise<void> {
  await app.register(asyncRoute, { dispatcher })
  app.asyncRoute({ method, url: '/*', handler })
}

async function fastifyServer (target: Target, upstream: string): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  switch (target) {
    case 'pipe-url':
    case 'pipe-url-undici8': {
      const dispatcher = target === 'pipe-url' ? undefined : new (await undici8()).Agent() as unknown as Dispatcher
      await asyncProxy(app, 'GET', (request, reply) => { void reply.pipe(upstream + request.url) }, dispatcher)
      break
    }
    case 'forward-get':
      await asyncProxy(app, 'GET', (request, reply) => { void reply.forward(upstream + request.url) })
      break
    case 'fetch-pipe':
      await asyncProxy(app, 'GET', async (request, reply) => { await reply.pipe(await reply.fetch(upstream + request.url)) })
      break
    case 'upstream-pipe':
      await app.register(asyncRoute)
      app.asyncRoute({
        method: 'GET',
        url: '/*',
        upstream: (request) => upstream + request.url,
        handler (request, reply, res) {
          void reply.pipe(res)
        }
      })
      break
    case 'undici-send':
      app.get('/*', async (req, reply) => {
        const res = await request(upstream + req.url)
        reply.code(res.statusCode)
        const type = res.headers['content-type']
        if (type !== undefined) reply.header('content-type', type)
        return await reply.send(res.body)
      })
      break
    case 'reply-from':
      await app.register(replyFrom, { base: upstream })
      app.get('/*', (req, reply) => {
        reply.from(req.url)
      })
      break
    case 'forward-post':
      app.addContentTypeParser('application/octet-stream', (req, payload, done) => { done(null, payload) })
      await asyncProxy(app, 'POST', (request, reply) => { void reply.forward(upstream + request.url) })
      break
    case 'reply-from-post':
      app.addContentTypeParser('application/octet-stream', (req, payload, done) => { done(null, payload) })
      await app.register(replyFrom, { base: upstream })
      app.post('/*', (req, reply) => {
        reply.from(req.url)
      })
      break
    case 'finish-json':
      await app.register(asyncRoute)
      app.asyncRoute({
        method: 'GET',
        url: '/json',
        handler (request, reply) {
          reply.finish(JSON_BODY)
        }
      })
      break
    case 'plain-json':
      app.get('/json', async () => JSON_BODY)
      break
    case 'hijack-stream': {
      // The floor of any Fastify route that proxies: Fastify's routing and hijack(), then the
      // ceiling's own relay into Node's response.
      const pool = new Pool(upstream)
      app.get('/*', (request, reply) => {
        reply.hijack()
        relay(pool, request.url, reply.raw)
      })
      break
    }
    case 'hijack-json':
      // The floor of any route that hijacks: Fastify's routing and hijack(), then the body
      // written straight to Node's response.
      app.get('/json', (request, reply) => {
        reply.hijack()
        const body = JSON.stringify(JSON_BODY)
        // (The length as a string, as Fastify writes it: Node's header check is slower for a number.)
        reply.raw.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) })
        reply.raw.end(body)
      })
      break
    default:
      throw new Error(`not a Fastify target: ${target}`)
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

/** The ceiling's relay: `GET path` through an undici Pool, `stream()` straight into `res`. */
function relay (pool: Pick<Pool, 'stream'>, path: string, res: http.ServerResponse): void {
  pool.stream({ path, method: 'GET' }, ({ statusCode, headers }) => {
    const out: OutgoingHttpHeaders = {}
    for (const name of Object.keys(headers)) {
      if (!HOP_BY_HOP.has(name)) out[name] = headers[name]
    }
    res.writeHead(statusCode, out)
    return res
  }, (err) => {
    if (err !== null) {
      if (res.headersSent) res.destroy()
      else res.writeHead(502).end()
    }
  })
}

/** The ceiling: one bare Node hop and the relay. */
async function ceilingServer (pool: Pick<Pool, 'stream'>): Promise<number> {
  const server = http.createServer((req, res) => {
    relay(pool, req.url ?? '/', res)
  })
  server.keepAliveTimeout = 72_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as { port: number }).port
}

/**
 * Every server starts with Node's EventEmitter constructor in the same state. It runs for
 * each request and response, and V8 makes it megamorphic (slower) once it has seen more than
 * four kinds of emitter: whether a server's process had by its first request depended on
 * startup accidents (the TypeScript loader's file handles, an undici Agent made at `register`),
 * and moved a server's count by ~750 instructions per request. An app with a logger stream or
 * a database client is past four anyway: so is every server here, before it serves.
 */
function settleEmitterState (): void {
  // (Six classes of their own: constructing one is what the constructor sees.)
  for (let kind = 0; kind < 6; kind++) void new (class extends EventEmitter {})()
}

async function start (target: string, upstream: string): Promise<number> {
  if (!isTarget(target)) throw new Error(`unknown target ${target}`)
  settleEmitterState()
  if (target === 'ceiling') return await ceilingServer(new Pool(upstream))
  if (target === 'ceiling-undici8') return await ceilingServer(new (await undici8()).Pool(upstream) as unknown as Pool)
  const app = await fastifyServer(target, upstream)
  return (app.server.address() as { port: number }).port
}

// V8's major collections, counted as they end (the observer runs once per collection, not per
// request): bench:instructions leaves a round out whose window held one.
let majorCollections = 0
new PerformanceObserver((list) => {
  for (const entry of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
    if (entry.detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) majorCollections++
  }
}).observe({ entryTypes: ['gc'] })

process.on('message', (message) => {
  if (message === 'cpu') process.send?.(process.cpuUsage())
  else if (message === 'collections') process.send?.(majorCollections)
})
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
start(process.argv[2] ?? '', process.argv[3] ?? '').then((port) => {
  process.send?.({ port, node: process.version })
}, (error: unknown) => {
  process.send?.({ error: error instanceof Error ? error.message : String(error) }, () => process.exit(1))
})
