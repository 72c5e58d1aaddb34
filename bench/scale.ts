// The scale benchmark (`npm run bench:scale`, or `npm run bench -- --scale`): N unfinished
// replies held open at once (N = 10,000 by default, `--n=`), then answered by the watchdog.
// Memory per pending reply is measured after GC as the plugin's overhead over a bare Fastify
// route that only hijacks and holds its reply (ending it from its own timer), in the same run.
import http from 'node:http'
import { CLIENT_CORE, option, SERVER_CORE, sleep, startChild } from './common.js'

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

async function runVariant (variant: 'bare' | 'async', n: number, timeout: number): Promise<VariantResult> {
  const server = startChild(SERVER_CORE, 'bench/scale-server.ts', [variant, String(timeout)], { nodeFlags: ['--expose-gc'] })
  try {
    const { port } = await server.ready as { port: number }
    await warm(port, 2000)
    await sleep(200)
    const base = await server.ask('measure') as Memory
    const client = startChild(CLIENT_CORE, 'bench/scale-client.ts', [String(port), String(n), String(timeout)])
    try {
      const { openMs } = await client.ready as { openMs: number }
      let pendingSeen = 0
      for (let i = 0; i < 100 && pendingSeen < n; i++) {
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

export async function runScale (argv: string[]): Promise<void> {
  const n = option(argv, 'n', 10_000)
  const timeout = option(argv, 'scale-timeout', 10_000)
  console.log(`\n## Scale: ${n.toLocaleString('en-US')} pending replies, watchdog ${timeout} ms (server on core ${SERVER_CORE}, client on core ${CLIENT_CORE}, memory after GC)\n`)
  const results: Record<string, VariantResult> = {}
  for (const variant of ['bare', 'async'] as const) {
    process.stderr.write(`  scale: ${variant}…\n`)
    results[variant] = await runVariant(variant, n, timeout)
  }
  const bare = results.bare as VariantResult
  const plugin = results.async as VariantResult
  const kib = (bytes: number): string => `${(bytes / 1024).toFixed(2)} KiB`
  console.log('| server | held at once | heap / reply | RSS / reply | answers | last answer after its timeout |')
  console.log('| --- | ---: | ---: | ---: | --- | ---: |')
  for (const [name, r] of [['bare Fastify, hijack + own timer', bare], ['asyncRoute, watchdog', plugin]] as const) {
    const statuses = Object.entries(r.client.statuses).map(([status, count]) => `${count} × ${status}`).join(', ')
    console.log(`| ${name} | ${r.pendingSeen.toLocaleString('en-US')} | ${kib(r.heapPer)} | ${kib(r.rssPer)} | ${statuses} | ${r.client.maxLateMs} ms |`)
  }
  console.log(`\nasyncRoute overhead per pending reply: heap ${kib(plugin.heapPer - bare.heapPer)}, RSS ${kib(plugin.rssPer - bare.rssPer)} (opening ${n} sockets took ${plugin.openMs} ms)`)
}
