// The soak: mixed traffic with injected faults through async routes, then proof that every
// request ended as the contract says and that nothing was lost or leaked.
import http from 'node:http'
import { readResponse } from '../helpers/client.js'
import { LIMIT, SHORT_TIMEOUT_MS, SSE_EVENTS, SSE_IDLE_MS, startSoakApp, STREAM_BYTES } from './app.js'
import { BODY_SIZES, makeBodies, startSoakUpstream, verifyBody } from './upstreams.js'

export interface SoakOptions {
  durationMs: number
  concurrency: number
  print?: (line: string) => void
}

/** What the server must count a request of each kind as. */
type Expected = 'finished' | 'timedOut' | 'failed' | 'aborted'

interface Kind {
  name: string
  expected: Expected
  /** Resolves with null when the outcome is the one the contract promises, else with what went wrong. */
  run: (base: string, agent: http.Agent, size: number) => Promise<string | null>
}

interface Response {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  complete: boolean
}

/** No answer within this long is a hang: every route ends well before it. */
const HANG_MS = 8_000

function get (url: string, agent: http.Agent, onResponse?: (res: http.IncomingMessage, req: http.ClientRequest) => void): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      readResponse(res, (body, complete) => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete })
      })
      onResponse?.(res, req)
    })
    const timer = setTimeout(() => req.destroy(new Error('hang')), HANG_MS)
    req.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })
}

/** Request bodies of the forwarded POSTs: checksummed, as the upstream's answers are. */
const POST_BODIES = makeBodies()
let flakyIds = 0

/** POSTs `body` (in two writes when `streamed`: the gateway must not wait for it whole). */
function post (url: string, agent: http.Agent, body: Buffer, contentType: string, streamed: boolean): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': contentType }
    if (!streamed) headers['content-length'] = body.length
    const req = http.request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = []
      let ended = false
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => { ended = true })
      res.on('error', () => {})
      res.on('close', () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: ended && res.complete })
      })
    })
    const timer = setTimeout(() => req.destroy(new Error('hang')), HANG_MS)
    req.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    if (streamed) {
      const half = Math.floor(body.length / 2)
      req.write(body.subarray(0, half))
      setImmediate(() => req.end(body.subarray(half)))
    } else {
      req.end(body)
    }
  })
}

const forwardKind = (streamed: boolean): Kind => ({
  name: `forwarded POST (${streamed ? 'streamed' : 'parsed'} body)`,
  expected: 'finished',
  run: async (base, agent, size) => {
    const body = POST_BODIES.get(size) as Buffer
    const res = await post(`${base}/forward/post?size=${size}`, agent, body, streamed ? 'application/x-soak-stream' : 'application/octet-stream', streamed)
    return wholeBody(res, size)
  }
})

const flakyKind = (route: string): Kind => ({
  name: `flaky upstream, retried (${route})`,
  expected: 'finished',
  run: async (base, agent, size) => wholeBody(await get(`${base}/flaky/${route}?size=${size}&id=${flakyIds++}`, agent), size)
})

function errorAnswer (res: Response, status: number, code: string): string | null {
  if (res.status !== status || !res.complete) return `expected ${status} ${code}, got ${res.status}${res.complete ? '' : ' (cut)'}`
  const parsed = JSON.parse(res.body.toString()) as { code?: string }
  return parsed.code === code ? null : `expected code ${code}, got ${String(parsed.code)}`
}

function wholeBody (res: Response, size: number): string | null {
  if (res.status !== 200) return `expected 200, got ${res.status}`
  if (!res.complete) return 'silent truncation: body cut short'
  return verifyBody(res.body, size) ? null : 'wrong body: checksum mismatch'
}

const okKind = (route: string): Kind => ({
  name: `ok ${route}`,
  expected: 'finished',
  run: async (base, agent, size) => wholeBody(await get(`${base}/ok/${route}?size=${size}`, agent), size)
})

/** The `data:` lines of a `text/event-stream` body, in order. */
function sseData (res: Response): string[] {
  return res.body.toString().split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6))
}

function sseHead (res: Response): string | null {
  if (res.status !== 200) return `expected a 200 event stream, got ${res.status}`
  return res.headers['content-type'] === 'text/event-stream' ? null : `expected text/event-stream, got ${String(res.headers['content-type'])}`
}

const SSE_ALL = Array.from({ length: SSE_EVENTS }, (_, i) => `event ${i + 1}`).join(',')

const KINDS: Kind[] = [
  okKind('pipe-url'),
  okKind('fetch-pipe'),
  okKind('upstream'),
  okKind('buffered'),
  okKind('pipe-url'),
  okKind('fetch-pipe'),
  forwardKind(false),
  forwardKind(true),
  flakyKind('pipe-url'),
  flakyKind('fetch'),
  flakyKind('forward'),
  {
    name: 'slow upstream (watchdog)',
    expected: 'timedOut',
    run: async (base, agent) => errorAnswer(await get(`${base}/slow`, agent), 504, 'FST_ASYNC_ROUTE_TIMEOUT')
  },
  {
    name: 'refused upstream',
    expected: 'failed',
    run: async (base, agent) => errorAnswer(await get(`${base}/refuse`, agent), 502, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  },
  {
    name: 'stalled upstream',
    expected: 'failed',
    run: async (base, agent) => errorAnswer(await get(`${base}/stall`, agent), 504, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
  },
  {
    name: 'upstream reset mid-body',
    expected: 'failed',
    run: async (base, agent) => {
      const res = await get(`${base}/reset`, agent)
      if (res.status !== 200) return `expected a 200 head, got ${res.status}`
      return res.complete ? 'silent truncation: a reset upstream body ended cleanly' : null
    }
  },
  {
    name: 'forgotten finish()',
    expected: 'timedOut',
    run: async (base, agent) => errorAnswer(await get(`${base}/forget`, agent), 504, 'FST_ASYNC_ROUTE_TIMEOUT')
  },
  {
    name: 'handler throws',
    expected: 'failed',
    run: async (base, agent) => {
      const res = await get(`${base}/throw`, agent)
      return res.status === 500 && res.complete ? null : `expected 500, got ${res.status}`
    }
  },
  {
    name: 'finish() twice',
    expected: 'finished',
    run: async (base, agent) => {
      const res = await get(`${base}/twice`, agent)
      return res.status === 200 && res.complete && res.body.toString() === 'first' ? null : `expected 200 "first", got ${res.status} ${res.body.toString()}`
    }
  },
  {
    name: 'client leaves before the answer',
    expected: 'aborted',
    run: async (base, agent) => {
      await get(`${base}/hold`, agent, (res) => res.destroy())
      return null
    }
  },
  {
    name: 'client leaves mid-stream',
    expected: 'aborted',
    run: async (base, agent) => {
      const res = await get(`${base}/stream`, agent, (response) => response.once('data', () => response.destroy()))
      return res.complete ? 'the stream ended although the client left' : null
    }
  },
  {
    name: 'client reads slowly',
    expected: 'finished',
    run: async (base, agent) => {
      const size = 1024 * 1024
      const res = await get(`${base}/ok/pipe-url?size=${size}`, agent, (response) => {
        let seen = 0
        response.on('data', (chunk: Buffer) => {
          seen += chunk.length
          if (seen >= 128 * 1024) {
            seen = 0
            response.pause()
            setTimeout(() => response.resume(), 5)
          }
        })
      })
      return wholeBody(res, size)
    }
  },
  {
    name: 'SSE stream, ends after its events',
    expected: 'finished',
    run: async (base, agent) => {
      const res = await get(`${base}/sse/healthy`, agent)
      const head = sseHead(res)
      if (head !== null) return head
      if (!res.complete) return 'the stream was cut'
      const data = sseData(res).join(',')
      return data === SSE_ALL ? null : `expected ${SSE_EVENTS} events in order, got ${data}`
    }
  },
  {
    name: 'SSE source goes silent (idleTimeout)',
    expected: 'timedOut',
    run: async (base, agent) => {
      const res = await get(`${base}/sse/silent`, agent)
      const head = sseHead(res)
      if (head !== null) return head
      if (res.complete) return 'silent truncation: a stream cut by idleTimeout ended cleanly'
      return sseData(res).join(',') === 'event 1' ? null : `expected the one event sent, got ${sseData(res).join(',')}`
    }
  },
  {
    name: 'stream read whole',
    expected: 'finished',
    run: async (base, agent) => {
      const res = await get(`${base}/stream`, agent)
      return res.status === 200 && res.complete && res.body.length === STREAM_BYTES ? null : `expected ${STREAM_BYTES} bytes, got ${res.body.length}${res.complete ? '' : ' (cut)'}`
    }
  }
]

/** The overload phase: bursts well above `/limited`'s maxPending, one after another. */
const BURSTS = 3
const BURST = LIMIT * 6

interface Overload { sent: number, ok: number, rejected: number, wrong: number, problems: string[] }

/**
 * Every request of a burst gets either its normal answer (200 "ok") or, at once, 503
 * FST_ASYNC_ROUTE_OVERLOADED with `retry-after: 1`; nothing else.
 */
async function overloadPhase (base: string): Promise<Overload> {
  const result: Overload = { sent: 0, ok: 0, rejected: 0, wrong: 0, problems: [] }
  const agent = new http.Agent({ keepAlive: true, maxSockets: BURST })
  const one = async (): Promise<void> => {
    result.sent++
    let problem: string | null = null
    try {
      const res = await get(`${base}/limited`, agent)
      if (res.status === 200 && res.complete && res.body.toString() === 'ok') {
        result.ok++
      } else if (res.status === 503) {
        problem = errorAnswer(res, 503, 'FST_ASYNC_ROUTE_OVERLOADED') ?? (res.headers['retry-after'] === '1' ? null : `retry-after ${String(res.headers['retry-after'])}`)
        if (problem === null) result.rejected++
      } else {
        problem = `expected 200 "ok" or 503, got ${res.status} ${res.body.toString().slice(0, 80)}`
      }
    } catch (error) {
      problem = `client error: ${(error as Error).message}`
    }
    if (problem !== null) {
      result.wrong++
      if (result.problems.length < 5) result.problems.push(`overload: ${problem}`)
    }
  }
  for (let burst = 0; burst < BURSTS; burst++) await Promise.all(Array.from({ length: BURST }, one))
  agent.destroy()
  // A burst that never went over the limit tested nothing.
  if (result.rejected === 0) result.problems.push(`overload: no 503 in ${BURSTS} bursts of ${BURST} (maxPending ${LIMIT})`)
  if (result.ok < LIMIT * BURSTS) result.problems.push(`overload: only ${result.ok} normal answers, at least ${LIMIT * BURSTS} expected`)
  return result
}

export interface SoakResult {
  ok: boolean
  problems: string[]
  report: string
}

function mib (bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

function forceGc (): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run the soak with node --expose-gc')
  for (let i = 0; i < 3; i++) gc()
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function until (check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) return false
    await sleep(20)
  }
  return true
}

function activeTimers (): number {
  return process.getActiveResourcesInfo().filter((type) => type === 'Timeout').length
}

export async function runSoak (options: SoakOptions): Promise<SoakResult> {
  const print = options.print ?? (() => {})
  const problems: string[] = []
  let unhandled = 0
  const onUnhandled = (error: unknown): void => {
    unhandled++
    problems.push(`unhandled: ${String((error as Error)?.stack ?? error)}`)
  }
  process.on('unhandledRejection', onUnhandled)
  process.on('uncaughtException', onUnhandled)

  const upstream = await startSoakUpstream()
  const { app, url, logs, dispatcher } = await startSoakApp(upstream.origin, upstream.refusedOrigin, options.concurrency)
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.concurrency })

  // Warm up every path once, so that the baseline holds compiled code and pools.
  for (const kind of KINDS) await kind.run(url, agent, BODY_SIZES[0] as number)
  const warmStats = app.asyncRoute.stats()
  await until(() => upstream.openSockets() === 0, 3_000)
  forceGc()
  const heapBefore = process.memoryUsage().heapUsed
  const timersBefore = activeTimers()

  const sent = new Map<string, number>()
  const failedByKind = new Map<string, number>()
  const expected = { finished: 0, timedOut: 0, failed: 0, aborted: 0 }
  let next = 0
  const deadline = Date.now() + options.durationMs
  const started = Date.now()
  async function worker (): Promise<void> {
    while (Date.now() < deadline) {
      const n = next++
      const kind = KINDS[n % KINDS.length] as Kind
      const size = BODY_SIZES[Math.floor(n / KINDS.length) % BODY_SIZES.length] as number
      sent.set(kind.name, (sent.get(kind.name) ?? 0) + 1)
      expected[kind.expected]++
      let problem: string | null
      try {
        problem = await kind.run(url, agent, size)
      } catch (error) {
        problem = `client error: ${(error as Error).message}`
      }
      if (problem !== null) {
        failedByKind.set(kind.name, (failedByKind.get(kind.name) ?? 0) + 1)
        if (problems.length < 20) problems.push(`${kind.name}: ${problem}`)
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, worker))
  const overload = await overloadPhase(url)
  problems.push(...overload.problems)
  expected.finished += overload.ok
  const elapsed = Date.now() - started

  // Let the last aborts and cancellations settle, then check that nothing is left.
  const drained = await until(() => app.asyncRoute.pending().length === 0, 3_000)
  agent.destroy()
  const socketsFreed = await until(() => upstream.openSockets() === 0, 3_000)
  const socketsLeft = upstream.openSockets()
  await sleep(50)
  forceGc()
  const heapAfter = process.memoryUsage().heapUsed
  const timersAfter = activeTimers()

  const stats = app.asyncRoute.stats()
  const total = [...sent.values()].reduce((a, b) => a + b, 0)
  const delta = {
    started: stats.started - warmStats.started,
    finished: stats.finished - warmStats.finished,
    timedOut: stats.timedOut - warmStats.timedOut,
    failed: stats.failed - warmStats.failed,
    aborted: stats.aborted - warmStats.aborted,
    rejected: stats.rejected - warmStats.rejected
  }
  if (!drained) problems.push(`pending() not empty: ${app.asyncRoute.pending().length} replies left`)
  if (stats.started !== stats.finished + stats.timedOut + stats.aborted + stats.failed + stats.pending) {
    problems.push(`stats do not add up: ${JSON.stringify(stats)}`)
  }
  if (delta.started !== total + overload.ok) problems.push(`stats.started counted ${delta.started} replies for ${total + overload.ok} requests sent and not rejected`)
  if (delta.rejected !== overload.rejected) problems.push(`stats.rejected is ${delta.rejected}, but ${overload.rejected} requests were answered 503 OVERLOADED`)
  for (const outcome of ['finished', 'timedOut', 'failed', 'aborted'] as const) {
    if (delta[outcome] !== expected[outcome]) problems.push(`stats.${outcome} is ${delta[outcome]}, expected ${expected[outcome]}`)
  }
  if (!socketsFreed) problems.push(`${socketsLeft} upstream sockets still open after the keep-alive timeout`)
  if (timersAfter > timersBefore) problems.push(`${timersAfter - timersBefore} timers left behind`)
  const heapGrowth = heapAfter - heapBefore
  const heapMargin = Math.max(16 * 1024 * 1024, heapBefore * 0.25)
  if (heapGrowth > heapMargin) problems.push(`heap grew by ${mib(heapGrowth)} (margin ${mib(heapMargin)})`)
  if (unhandled > 0) problems.push(`${unhandled} unhandled rejections or uncaught exceptions`)

  await app.close()
  await dispatcher.close()
  await upstream.close()
  process.off('unhandledRejection', onUnhandled)
  process.off('uncaughtException', onUnhandled)

  const lines: string[] = []
  lines.push(`soak: ${elapsed} ms, ${options.concurrency} concurrent clients, ${total + overload.sent} requests (${Math.round((total + overload.sent) / (elapsed / 1000))} req/s), watchdog ${SHORT_TIMEOUT_MS} ms on the slow routes, idleTimeout ${SSE_IDLE_MS} ms on the silent event streams`)
  lines.push('')
  lines.push('| request kind | sent | wrong outcome | server counts it as |')
  lines.push('| --- | ---: | ---: | --- |')
  const byName = new Map(KINDS.map((kind) => [kind.name, kind.expected]))
  for (const [name, count] of sent) lines.push(`| ${name} | ${count} | ${failedByKind.get(name) ?? 0} | ${byName.get(name) as string} |`)
  lines.push(`| overload: ${BURSTS} bursts of ${BURST} at maxPending ${LIMIT} | ${overload.sent} | ${overload.wrong} | ${overload.ok} finished, ${overload.rejected} rejected (503) |`)
  lines.push('')
  lines.push('| check | result |')
  lines.push('| --- | --- |')
  lines.push(`| stats (this run) | started ${delta.started}, finished ${delta.finished}, timedOut ${delta.timedOut}, failed ${delta.failed}, aborted ${delta.aborted}, rejected ${delta.rejected}, pending ${stats.pending} |`)
  lines.push(`| expected | finished ${expected.finished}, timedOut ${expected.timedOut}, failed ${expected.failed}, aborted ${expected.aborted}, rejected ${overload.rejected} |`)
  lines.push(`| faults injected | ${total - (sent.get('ok pipe-url') ?? 0) - (sent.get('ok fetch-pipe') ?? 0) - (sent.get('ok upstream') ?? 0) - (sent.get('ok buffered') ?? 0) - (sent.get('stream read whole') ?? 0) - (sent.get('SSE stream, ends after its events') ?? 0) + overload.rejected} |`)
  lines.push(`| log lines | ${logs.warn} warnings, ${logs.error} errors |`)
  lines.push(`| heap after GC | ${mib(heapBefore)} before, ${mib(heapAfter)} after (${heapGrowth >= 0 ? '+' : ''}${mib(heapGrowth)}) |`)
  lines.push(`| upstream sockets left | ${socketsLeft} (of ${upstream.connections()} opened) |`)
  lines.push(`| timers | ${timersBefore} before, ${timersAfter} after |`)
  lines.push(`| unhandled rejections / exceptions | ${unhandled} |`)
  lines.push('')
  lines.push(problems.length === 0 ? 'verdict: PASS' : `verdict: FAIL\n${problems.map((p) => `- ${p}`).join('\n')}`)
  const report = lines.join('\n')
  print(report)
  return { ok: problems.length === 0, problems, report }
}
