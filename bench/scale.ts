// The scale benchmark (`npm run bench:scale`, or `npm run bench -- --scale`): N unfinished
// replies held open at once (N = 10,000 by default, `--n=`), then answered by the watchdog.
// Memory per pending reply is measured after GC as the plugin's overhead over a bare Fastify
// route that only hijacks and holds its reply (ending it from its own timer), in the same run;
// and again with all three budgets set (idleTimeout, deadlineHeader, maxPending).
// The same three again over cleartext HTTP/2 with 100,000 pending replies by default (`--h2-n=`,
// 0 for none; 1,000 streams per session): one process cannot hold that many HTTP/1 sockets
// (20,000 file descriptors at most here), HTTP/2 streams it can.
// Then the overload comparison: the server's CPU time per answer for 10,000 `503 OVERLOADED`
// answers (a route whose maxPending is reached) against 10,000 replies finished at once, in
// alternating batches over the same keep-alive connections.
import http from 'node:http'
import http2 from 'node:http2'
import { CLIENT_CORE, median, option, SERVER_CORE, sleep, startChild } from './common.js'

interface Memory { heapUsed: number, rss: number, external: number, pending: number }
interface ClientReport { statuses: Record<string, number>, maxLateMs: number, p50LateMs: number, minLateMs: number }
interface VariantResult { heapPer: number, rssPer: number, pendingSeen: number, openMs: number, client: ClientReport }

async function warm (port: number, count: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
  const one = async (): Promise<void> => await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/warm', agent }, (res) => {
      res.resume()
      res.on('end', resolve)
    }).on('error', reject)
  })
  for (let i = 0; i < count; i += 8) await Promise.all(Array.from({ length: 8 }, one))
  agent.destroy()
}

/** The same warm-up over one HTTP/2 session. */
async function warmH2 (port: number, count: number): Promise<void> {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  const one = async (): Promise<void> => await new Promise((resolve, reject) => {
    const stream = session.request({ ':path': '/warm' }, { endStream: true })
    stream.on('error', reject)
    stream.on('end', resolve)
    stream.resume()
  })
  for (let i = 0; i < count; i += 8) await Promise.all(Array.from({ length: 8 }, one))
  session.destroy()
}

type Protocol = 'h1' | 'h2'

type Variant = 'bare' | 'async' | 'budgets'
/**
 * Sent with every held request of every variant (so the request itself weighs the same in each):
 * longer than the watchdog, so it never shortens it, but the `budgets` variant parses it.
 */
const DEADLINE = 'x-request-timeout-ms: 600000'

async function runVariant (variant: Variant, n: number, timeout: number, protocol: Protocol = 'h1'): Promise<VariantResult> {
  const server = startChild(SERVER_CORE, 'bench/scale-server.ts', [variant, String(timeout), protocol], { nodeFlags: ['--expose-gc'] })
  try {
    const { port } = await server.ready as { port: number }
    await (protocol === 'h2' ? warmH2(port, 2000) : warm(port, 2000))
    await sleep(200)
    const base = await server.ask('measure') as Memory
    const clientScript = protocol === 'h2' ? 'bench/scale-client-h2.ts' : 'bench/scale-client.ts'
    const client = startChild(CLIENT_CORE, clientScript, [String(port), String(n), String(timeout), DEADLINE])
    try {
      const { openMs } = await client.ready as { openMs: number }
      let pendingSeen = 0
      // (Up to 5 s for the server to take the last requests in, 30 s for 100,000 HTTP/2 streams.)
      for (let i = 0; i < (protocol === 'h2' ? 600 : 100) && pendingSeen < n; i++) {
        pendingSeen = (await server.ask('pending') as { pending: number }).pending
        if (pendingSeen < n) await sleep(50)
      }
      const loaded = await server.ask('measure') as Memory
      const report = await client.next() as ClientReport
      return {
        heapPer: (loaded.heapUsed - base.heapUsed) / n,
        rssPer: (loaded.rss - base.rss) / n,
        pendingSeen: loaded.pending,
        openMs,
        client: report
      }
    } finally {
      await client.stop()
    }
  } finally {
    await server.stop()
  }
}

interface Batch { ms: number, cpuUs: number, statuses: Record<string, number>, rejected: number }

/** `n` requests to `path` from the client, with the server's CPU time and `stats().rejected` around them. */
async function batch (server: ReturnType<typeof startChild>, client: ReturnType<typeof startChild>, path: string, n: number): Promise<Batch> {
  const before = await server.ask('cpu') as { cpuUs: number, stats: { rejected: number } }
  const answer = await client.ask({ path, n }) as { ms: number, statuses: Record<string, number>, error?: string }
  if (answer.error !== undefined) throw new Error(`overload client: ${answer.error}`)
  const after = await server.ask('cpu') as { cpuUs: number, stats: { rejected: number } }
  return { ms: answer.ms, cpuUs: after.cpuUs - before.cpuUs, statuses: answer.statuses, rejected: after.stats.rejected - before.stats.rejected }
}

interface OverloadResult { finished: Batch[], overloaded: Batch[] }

async function runOverload (n: number, rounds: number): Promise<OverloadResult> {
  const server = startChild(SERVER_CORE, 'bench/scale-server.ts', ['overload', '0'], { nodeFlags: ['--expose-gc'] })
  let hold: http.ClientRequest | undefined
  try {
    const { port } = await server.ready as { port: number }
    await warm(port, 2000)
    // The one reply that fills /limited's maxPending of 1, held open until the end.
    hold = http.get({ host: '127.0.0.1', port, path: '/limited?hold=1', agent: false })
    hold.on('error', () => {})
    for (let i = 0; i < 100 && (await server.ask('pending') as { pending: number }).pending < 1; i++) await sleep(20)
    const client = startChild(CLIENT_CORE, 'bench/overload-client.ts', [String(port), '50'])
    try {
      await client.ready
      await batch(server, client, '/ok', 2000) // warm both paths over the client's connections
      await batch(server, client, '/limited', 2000)
      const result: OverloadResult = { finished: [], overloaded: [] }
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? ['/ok', '/limited'] : ['/limited', '/ok']
        for (const path of order) {
          const measured = await batch(server, client, path, n)
          ;(path === '/ok' ? result.finished : result.overloaded).push(measured)
        }
      }
      return result
    } finally {
      await client.stop()
    }
  } finally {
    hold?.destroy()
    await server.stop()
  }
}

/** Holds `n` replies in each variant and prints their memory and how late the last 504 came. */
async function printHeld (n: number, timeout: number, protocol: Protocol): Promise<void> {
  const results: Record<string, VariantResult> = {}
  for (const variant of ['bare', 'async', 'budgets'] as const) {
    process.stderr.write(`  scale (${protocol}): ${variant}…\n`)
    results[variant] = await runVariant(variant, n, timeout, protocol)
  }
  const bare = results.bare as VariantResult
  const plugin = results.async as VariantResult
  const budgets = results.budgets as VariantResult
  const kib = (bytes: number): string => `${(bytes / 1024).toFixed(2)} KiB`
  console.log('| server | held at once | heap / reply | RSS / reply | answers | last answer after its timeout |')
  console.log('| --- | ---: | ---: | ---: | --- | ---: |')
  for (const [name, r] of [['bare Fastify, hijack + own timer', bare], ['asyncRoute, watchdog', plugin], ['asyncRoute, watchdog + idleTimeout + deadlineHeader + maxPending', budgets]] as const) {
    const statuses = Object.entries(r.client.statuses).map(([status, count]) => `${count} × ${status}`).join(', ')
    console.log(`| ${name} | ${r.pendingSeen.toLocaleString('en-US')} | ${kib(r.heapPer)} | ${kib(r.rssPer)} | ${statuses} | ${r.client.maxLateMs} ms |`)
  }
  console.log(`\nasyncRoute overhead per pending reply: heap ${kib(plugin.heapPer - bare.heapPer)}, RSS ${kib(plugin.rssPer - bare.rssPer)} (opening ${n} ${protocol === 'h2' ? 'streams' : 'sockets'} took ${plugin.openMs} ms)`)
  const overBare = budgets.heapPer - bare.heapPer
  console.log(`with all three budgets: heap ${kib(overBare)} over bare (target ≤ 0.50 KiB: ${overBare <= 512 ? 'met' : 'missed'}), ${kib(budgets.heapPer - plugin.heapPer)} over the watchdog alone; RSS ${kib(budgets.rssPer - bare.rssPer)} over bare`)
}

export async function runScale (argv: string[]): Promise<void> {
  const n = option(argv, 'n', 10_000)
  const timeout = option(argv, 'scale-timeout', 10_000)
  const rounds = option(argv, 'overload-rounds', 9)
  console.log(`\n## Scale: ${n.toLocaleString('en-US')} pending replies, watchdog ${timeout} ms (server on core ${SERVER_CORE}, client on core ${CLIENT_CORE}, memory after GC)\n`)
  await printHeld(n, timeout, 'h1')
  const h2n = option(argv, 'h2-n', 100_000)
  const h2Timeout = option(argv, 'h2-timeout', 30_000)
  if (h2n > 0) {
    console.log(`\n### ${h2n.toLocaleString('en-US')} pending replies over cleartext HTTP/2 (${Math.ceil(h2n / 1000)} sessions × 1,000 streams), watchdog ${h2Timeout} ms\n`)
    await printHeld(h2n, h2Timeout, 'h2')
  }

  process.stderr.write('  scale: overload…\n')
  const overload = await runOverload(n, rounds)
  const us = (b: Batch): number => b.cpuUs / n
  const statuses = (batches: Batch[]): string => {
    const total: Record<string, number> = {}
    for (const b of batches) for (const [status, count] of Object.entries(b.statuses)) total[status] = (total[status] ?? 0) + count
    return Object.entries(total).map(([status, count]) => `${count.toLocaleString('en-US')} × ${status}`).join(', ')
  }
  const line = (name: string, batches: Batch[]): string => {
    const cpu = batches.map(us)
    const ms = batches.map((b) => b.ms)
    return `| ${name} | ${statuses(batches)} | ${median(ms)} ms (${Math.min(...ms)}–${Math.max(...ms)}) | ${median(cpu).toFixed(1)} µs (${Math.min(...cpu).toFixed(1)}–${Math.max(...cpu).toFixed(1)}) |`
  }
  console.log(`\n### Overload: ${rounds} alternating batches of ${n.toLocaleString('en-US')} requests each, 50 keep-alive connections\n`)
  console.log(`| ${n.toLocaleString('en-US')} requests | answers (all batches) | wall time per batch (median, min–max) | server CPU / answer (median, min–max) |`)
  console.log('| --- | --- | ---: | ---: |')
  console.log(line('asyncRoute, `reply.finish(\'ok\')` at once', overload.finished))
  console.log(line('asyncRoute, maxPending reached: `503 OVERLOADED`', overload.overloaded))
  const ratios = overload.overloaded.map((b, i) => us(b) / us(overload.finished[i] as Batch))
  const ratio = median(ratios)
  const rejected = overload.overloaded.reduce((sum, b) => sum + b.rejected, 0)
  const answered503 = overload.overloaded.reduce((sum, b) => sum + (b.statuses['503'] ?? 0), 0)
  console.log(`\nan overload answer costs ${ratio.toFixed(2)} × a finished reply's CPU (paired by round: ${ratios.map((r) => r.toFixed(2)).join(', ')}; ${ratios.filter((r) => r < 1).length} of ${ratios.length} below 1; target, the median below 1: ${ratio < 1 ? 'met' : 'missed'}); stats().rejected counted ${rejected.toLocaleString('en-US')} for ${answered503.toLocaleString('en-US')} answers 503`)
}
