// The waiters benchmark (`npm run bench:waiters`): N long polls of the chat example
// (examples/chat) held open at once, then one message published: memory per waiting reply
// (heap after GC, and RSS), the time from the publish to the last client holding the message
// (wake-all latency), and messages lost or duplicated. Server, client and this script run in
// separate processes (server pinned to core 0, client to core 1); each figure is set against
// the same run of a bare baseline: a plain Fastify route that hijacks its reply and keeps it in
// a Set. Default: 15,000 polls over HTTP/1.1 (one socket each) and 100,000 over h2c (100
// sessions × 1,000 streams), three publishes each. Options: --h1=N --h2=N --sessions=N
// --rounds=N --only=h1|h2.
//
// `--cluster[=1,2,4]`: the chat with its room shared through Redis (a redis-server of its own,
// persistence off) in 1, 2 and 4 server processes, the polls spread over them evenly (h2c,
// 40,000 by default: --h2=N), one publish to the first process per round; beside the
// single-process chat (room in memory), and a control: as many processes each with its room in
// memory and a publish of its own (what several processes cost, without Redis). It reports
// wake-all, lost and duplicated messages, the servers' CPU per delivered message (all server
// processes, from before the publish until every answer arrived) and Redis's own CPU. Servers
// and Redis share core 0 (`--server-cores=0-1` spreads the servers), the client has core 1.
import { spawnSync } from 'node:child_process'
import http from 'node:http'
import http2 from 'node:http2'
import os from 'node:os'
import { Redis } from 'ioredis'
import { startChild, type Child } from './common.js'

const WARM = 2_000
const TARGETS = { h1: 1_000, h2: 5_000 } as const // wake-all ms
const HEAP_MARGIN = 512 // bytes over the bare hijacked reply
const ROUNDS = option('rounds', 3) // publishes per server, each to n fresh polls

function option (name: string, fallback: number): number {
  const found = process.argv.find((arg) => arg.startsWith(`--${name}=`))
  return found === undefined ? fallback : Number(found.slice(name.length + 3))
}
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice(7)
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const now = (): number => performance.timeOrigin + performance.now()

/** POSTs a message the way the page does; resolves with its id when the server answered. */
async function publish (protocol: 'h1' | 'h2', port: number, body: string): Promise<number> {
  const payload = JSON.stringify({ body })
  const text = await new Promise<string>((resolve, reject) => {
    if (protocol === 'h1') {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/a/message/new', headers: { 'content-type': 'application/json' }, agent: false }, (res) => {
        let data = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => { data += chunk })
        res.on('end', () => resolve(data))
      })
      req.on('error', reject)
      req.end(payload)
    } else {
      const session = http2.connect(`http://127.0.0.1:${port}`)
      session.on('error', reject)
      const req = session.request({ ':method': 'POST', ':path': '/a/message/new', 'content-type': 'application/json' })
      let data = ''
      req.setEncoding('utf8')
      req.on('data', (chunk: string) => { data += chunk })
      req.on('end', () => { session.close(); resolve(data) })
      req.on('error', reject)
      req.end(payload)
    }
  })
  return (JSON.parse(text) as { id: number }).id
}

interface Memory { heapUsed: number, rss: number, waiting: number, pending: number, answeredAllAt: number }
interface Report { polls: number, answers: number, delivered: number, lost: number, duplicated: number, wrong: number, errors: number, firstAt: number, medianAt: number, lastAt: number }
interface Result { rounds: number[], heapPer: number, rssPer: number, held: number, openMs: number, publishMs: number, serverMs: number, firstMs: number, medianMs: number, wakeAllMs: number, report: Report, leftAfter: number }

/** Opens `n` polls, waits until the server holds them all, publishes, collects. */
async function round (server: Child, client: Child, protocol: 'h1' | 'h2', port: number, n: number, cursor: number, measure: boolean): Promise<Omit<Result, 'heapPer' | 'rssPer' | 'rounds'> & { loaded?: Memory }> {
  const opened = await client.ask({ open: n, cursor }) as { sent: number, openMs: number, error?: string }
  if (opened.error !== undefined) throw new Error(`client: ${opened.error}`)
  let held = 0
  for (let deadline = Date.now() + 60_000; held < n && Date.now() < deadline;) {
    held = (await server.ask('count') as Memory).waiting
    if (held < n) await sleep(100)
  }
  const loaded = measure ? await server.ask('measure') as Memory : undefined
  await sleep(measure ? 500 : 0)
  const publishedAt = now()
  const id = await publish(protocol, port, `message ${cursor + 1}`)
  const publishMs = now() - publishedAt
  const report = await client.ask({ collect: id, waitMs: 60_000 }) as Report
  await sleep(300)
  const left = await server.ask('count') as Memory
  return {
    held,
    openMs: opened.openMs,
    publishMs,
    serverMs: left.answeredAllAt - publishedAt,
    firstMs: report.firstAt - publishedAt,
    medianMs: report.medianAt - publishedAt,
    wakeAllMs: report.lastAt - publishedAt,
    report,
    leftAfter: left.waiting + left.pending,
    loaded
  }
}

async function run (variant: 'chat' | 'bare', protocol: 'h1' | 'h2', n: number, sessions: number): Promise<Result> {
  const server = startChild('0', 'bench/waiters-server.ts', [variant, protocol], { nodeFlags: ['--expose-gc', '--max-old-space-size=8192'] })
  try {
    const { port } = await server.ready as { port: number }
    const client = startChild('1', 'bench/waiters-client.ts', [protocol, String(port), String(sessions)], { nodeFlags: ['--max-old-space-size=8192'] })
    try {
      await client.ready
      await round(server, client, protocol, port, WARM, 0, false) // warm-up: JIT, pools
      await sleep(500)
      const base = await server.ask('measure') as Memory
      const first = await round(server, client, protocol, port, n, 1, true)
      const loaded = first.loaded as Memory
      const all = [first]
      for (let r = 2; r <= ROUNDS; r++) all.push(await round(server, client, protocol, port, n, r, false))
      // The machine may be shared: the timings shown are those of the median round (by
      // wake-all); lost and duplicated messages are counted over every round.
      const median = [...all].sort((a, b) => a.wakeAllMs - b.wakeAllMs)[all.length >> 1] as typeof first
      const sum = (key: 'delivered' | 'lost' | 'duplicated' | 'wrong'): number => all.reduce((total, r) => total + r.report[key], 0)
      return {
        ...median,
        report: { ...median.report, delivered: sum('delivered'), lost: sum('lost'), duplicated: sum('duplicated'), wrong: sum('wrong') },
        leftAfter: Math.max(...all.map((r) => r.leftAfter)),
        rounds: all.map((r) => r.wakeAllMs),
        heapPer: (loaded.heapUsed - base.heapUsed) / n,
        rssPer: (loaded.rss - base.rss) / n
      }
    } finally {
      await client.stop()
    }
  } finally {
    await server.stop()
  }
}

/** Redis's own CPU time so far in ms (`INFO cpu`: used_cpu_user + used_cpu_sys, µs precision). */
async function redisCpuMs (client: Redis): Promise<number> {
  const info = await client.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN)
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1000
}
let REDIS_URL = ''
const SERVER_CORES = process.argv.find((arg) => arg.startsWith('--server-cores='))?.slice(15) ?? '0'

interface ClusterResult { processes: number, held: number, wakeAllMs: number, firstMs: number, medianMs: number, serverMs: number, rounds: number[], delivered: number, lost: number, duplicated: number, wrong: number, leftAfter: number, cpuPerMessageUs: number, redisCpuMs: number, publishMs: number }

/**
 * `processes` chat servers, n polls spread over them. Their room is in Redis, or, without
 * `redis`, each one's in its own memory: then each gets a publish of its own (the control:
 * what running several processes costs, without Redis).
 */
async function runCluster (processes: number, n: number, sessions: number, redis?: Redis): Promise<ClusterResult> {
  const variant = redis === undefined ? 'chat' : 'redis'
  const servers = Array.from({ length: processes }, () => startChild(SERVER_CORES, 'bench/waiters-server.ts', [variant, 'h2', ...(redis === undefined ? [] : [REDIS_URL])], { nodeFlags: ['--expose-gc', '--max-old-space-size=8192'] }))
  try {
    const ports = await Promise.all(servers.map(async (server) => (await server.ready as { port: number }).port))
    const client = startChild('1', 'bench/waiters-client.ts', ['h2', ports.join(','), String(sessions)], { nodeFlags: ['--max-old-space-size=8192'] })
    const ask = async <T>(message: string): Promise<T[]> => await Promise.all(servers.map(async (server) => await server.ask(message) as T))
    const cpu = async (): Promise<number> => (await ask<{ cpu: number }>('cpu')).reduce((sum, { cpu }) => sum + cpu, 0)
    try {
      await client.ready
      const rounds: Array<Omit<ClusterResult, 'processes' | 'rounds'>> = []
      let cursor = 0 // the id of the last message published: every poll waits for the next one
      for (let r = 0; r <= ROUNDS; r++) { // round 0: a warm-up of WARM polls per process, not counted
        const polls = r === 0 ? WARM * processes : n
        const opened = await client.ask({ open: polls, cursor }) as { error?: string }
        if (opened.error !== undefined) throw new Error(`client: ${opened.error}`)
        let held = 0
        for (let deadline = Date.now() + 60_000; held < polls && Date.now() < deadline;) {
          held = (await ask<Memory>('count')).reduce((sum, { waiting }) => sum + waiting, 0)
          if (held < polls) await sleep(100)
        }
        await sleep(300)
        const cpuBefore = await cpu()
        const redisBefore = redis === undefined ? 0 : await redisCpuMs(redis)
        const publishedAt = now()
        // Memory rooms each number their messages 1, 2, 3…: the same id on every process.
        const ids = await Promise.all((redis === undefined ? ports : ports.slice(0, 1)).map(async (port) => await publish('h2', port, `message ${r}`)))
        cursor = ids[0] as number
        const publishMs = now() - publishedAt
        const report = await client.ask({ collect: cursor, waitMs: 60_000 }) as Report
        const cpuAfter = await cpu()
        const redisMs = redis === undefined ? 0 : await redisCpuMs(redis) - redisBefore
        await sleep(200)
        const left = await ask<Memory>('count')
        if (r === 0) continue
        rounds.push({
          held,
          publishMs,
          serverMs: Math.max(...left.map((l) => l.answeredAllAt)) - publishedAt,
          firstMs: report.firstAt - publishedAt,
          medianMs: report.medianAt - publishedAt,
          wakeAllMs: report.lastAt - publishedAt,
          delivered: report.delivered,
          lost: report.lost,
          duplicated: report.duplicated,
          wrong: report.wrong,
          leftAfter: left.reduce((sum, l) => sum + l.waiting + l.pending, 0),
          cpuPerMessageUs: (cpuAfter - cpuBefore) / Math.max(1, report.delivered),
          redisCpuMs: redisMs
        })
      }
      // The median round by wake-all (the machine may be shared); losses over every round.
      const median = [...rounds].sort((a, b) => a.wakeAllMs - b.wakeAllMs)[rounds.length >> 1] as typeof rounds[number]
      const sum = (key: 'delivered' | 'lost' | 'duplicated' | 'wrong'): number => rounds.reduce((total, round) => total + round[key], 0)
      const sorted = (values: number[]): number[] => [...values].sort((a, b) => a - b)
      return {
        ...median,
        processes,
        delivered: sum('delivered'),
        lost: sum('lost'),
        duplicated: sum('duplicated'),
        wrong: sum('wrong'),
        leftAfter: Math.max(...rounds.map((round) => round.leftAfter)),
        rounds: rounds.map((round) => round.wakeAllMs),
        // CPU per message: the median round's by this figure too
        cpuPerMessageUs: sorted(rounds.map((round) => round.cpuPerMessageUs))[rounds.length >> 1] as number,
        redisCpuMs: sorted(rounds.map((round) => round.redisCpuMs))[rounds.length >> 1] as number
      }
    } finally {
      await client.stop()
    }
  } finally {
    await Promise.all(servers.map(async (server) => await server.stop()))
  }
}

const kib = (bytes: number): string => `${(bytes / 1024).toFixed(2)} KiB`
const ms = (value: number): string => `${Math.round(value)} ms`
const count = (value: number): string => value.toLocaleString('en-US')

const clusterArg = process.argv.find((arg) => arg === '--cluster' || arg.startsWith('--cluster='))
if (clusterArg !== undefined) {
  const counts = clusterArg === '--cluster' ? [1, 2, 4] : clusterArg.slice(10).split(',').map(Number)
  const n = option('h2', 40_000)
  const sessions = option('sessions', 100)
  const { startRedis, REDIS_SERVER } = await import('../test/helpers/redis.js')
  const stops: Array<() => unknown> = []
  const redisServer = await startRedis({ teardown: (fn) => stops.push(fn) })
  spawnSync('taskset', ['-p', '-c', '0', String(redisServer.pid)], { stdio: 'ignore' })
  REDIS_URL = redisServer.url
  const redis = new Redis(REDIS_URL)
  stops.unshift(() => redis.quit())
  const redisVersion = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' }).stdout.match(/v=(\S+)/)?.[1] ?? '?'
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  console.log(`# waiters, cluster mode: ${cpu}, ${os.cpus().length} cores, Linux ${os.release()}, Node ${process.version}, redis-server ${redisVersion}; servers on core(s) ${SERVER_CORES}, Redis on core 0, client on core 1\n`)
  console.log(`## ${count(n)} long polls over h2c (${sessions} sessions spread over the processes), ${ROUNDS} publishes each\n`)
  const results: Array<ClusterResult & { label: string }> = []
  let commandStats = ''
  try {
    for (const processes of [...new Set([1, ...counts])]) {
      process.stderr.write(`  chat, room in memory, ${processes} processes: ${count(n)} polls…\n`)
      results.push({ ...await runCluster(processes, n, sessions), label: processes === 1 ? 'room in memory' : 'rooms in memory (control: a publish to each)' })
    }
    for (const processes of counts) {
      process.stderr.write(`  chat, room in Redis, ${processes} processes: ${count(n)} polls…\n`)
      results.push({ ...await runCluster(processes, n, sessions, redis), label: 'room in Redis' })
      await redis.del('chat:messages') // the next run starts from an empty room too
    }
    const stats = await redis.info('commandstats')
    const perCall = (command: string): string => {
      const found = new RegExp(`^cmdstat_${command}:calls=(\\d+),usec=\\d+,usec_per_call=([\\d.]+)`, 'm').exec(stats)
      return found === null ? `${command}: not called` : `${command} ${found[2] ?? '?'} µs × ${count(Number(found[1]))}`
    }
    commandStats = ['evalsha', 'eval', 'xread', 'xrevrange'].map(perCall).join(', ')
  } finally {
    for (const stop of stops) await stop()
  }
  const single = results[0] as ClusterResult
  const memoryOf = (processes: number): ClusterResult => results.find((r) => r.label !== 'room in Redis' && r.processes === processes) ?? single
  const versus = (r: ClusterResult, base: ClusterResult): string => r === base ? '—' : `${r.cpuPerMessageUs >= base.cpuPerMessageUs ? '+' : ''}${((r.cpuPerMessageUs / base.cpuPerMessageUs - 1) * 100).toFixed(1)} %`
  console.log('| room | processes | held | publish answered | servers answered all | first / median / last client has it | delivered | lost | duplicated | left waiting | server CPU / delivered message | vs 1 process, memory | vs as many processes, memory | Redis CPU per publish |')
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const r of results) {
    const redisRow = r.label === 'room in Redis'
    console.log(`| ${r.label} | ${r.processes} | ${count(r.held)} | ${ms(r.publishMs)} | ${ms(r.serverMs)} | ${ms(r.firstMs)} / ${ms(r.medianMs)} / **${ms(r.wakeAllMs)}** | ${count(r.delivered)} | ${r.lost} | ${r.duplicated} | ${r.leftAfter} | ${r.cpuPerMessageUs.toFixed(1)} µs | ${versus(r, single)} | ${redisRow ? versus(r, memoryOf(r.processes)) : '—'} | ${redisRow ? `${r.redisCpuMs.toFixed(2)} ms` : '—'} |`)
  }
  console.log(`\nwake-all per round: ${results.map((r) => `${r.label} × ${r.processes}: ${r.rounds.map(ms).join(', ')}`).join('; ')}`)
  console.log(`Redis per call (INFO commandstats, every run above; evalsha is the post script: XREVRANGE + XADD): ${commandStats}`)
  console.log(`load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  let failed = false
  for (const r of results) {
    const ok = r.lost === 0 && r.duplicated === 0 && r.wrong === 0 && r.leftAfter === 0
    console.log(`- ${ok ? 'PASS' : 'FAIL'} ${r.label} × ${r.processes}: zero lost, zero duplicated, none left waiting (${r.lost} lost, ${r.duplicated} duplicated, ${r.wrong} wrong, ${r.leftAfter} left)`)
    if (!ok) failed = true
  }
  for (const r of results.filter((r) => r.label === 'room in Redis')) {
    const extra = r.cpuPerMessageUs / single.cpuPerMessageUs - 1
    const fanOut = r.cpuPerMessageUs / memoryOf(r.processes).cpuPerMessageUs - 1
    console.log(`- ${extra <= 0.1 ? 'PASS' : 'FAIL'} Redis × ${r.processes}: server CPU per delivered message ≤ the single-process chat + 10 % (${(extra * 100).toFixed(1)} %; against ${r.processes} processes with rooms in memory: ${(fanOut * 100).toFixed(1)} %)`)
    if (extra > 0.1) failed = true
  }
  process.exit(failed ? 1 : 0)
}

const plans: Array<{ protocol: 'h1' | 'h2', n: number, sessions: number, label: string }> = []
const h1 = option('h1', 15_000)
const h2 = option('h2', 100_000)
const sessions = option('sessions', 100)
if (only !== 'h2') plans.push({ protocol: 'h1', n: h1, sessions: 1, label: `${count(h1)} long polls over HTTP/1.1 (one socket each)` })
if (only !== 'h1') plans.push({ protocol: 'h2', n: h2, sessions, label: `${count(h2)} long polls over h2c (${sessions} sessions × ${count(Math.ceil(h2 / sessions))} streams)` })

const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
console.log(`# waiters: ${cpu}, ${os.cpus().length} cores, Linux ${os.release()}, Node ${process.version}; server on core 0, client on core 1\n`)
let failed = false
for (const plan of plans) {
  const results: Record<string, Result> = {}
  for (const variant of ['bare', 'chat'] as const) {
    process.stderr.write(`  ${plan.protocol} ${variant}: ${count(plan.n)} polls…\n`)
    results[variant] = await run(variant, plan.protocol, plan.n, plan.sessions)
  }
  const bare = results.bare as Result
  const chat = results.chat as Result
  console.log(`## ${plan.label}\n`)
  console.log('| server | held | heap / waiter | RSS / waiter | publish answered | server answered all | first / median / last client has it | delivered | lost | duplicated | left waiting |')
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const [name, r] of [['bare: `hijack()` + a Set', bare], ['chat example (asyncRoute)', chat]] as const) {
    console.log(`| ${name} | ${count(r.held)} | ${kib(r.heapPer)} | ${kib(r.rssPer)} | ${ms(r.publishMs)} | ${ms(r.serverMs)} | ${ms(r.firstMs)} / ${ms(r.medianMs)} / **${ms(r.wakeAllMs)}** | ${count(r.report.delivered)} | ${r.report.lost} | ${r.report.duplicated} | ${r.leftAfter} |`)
  }
  const overhead = chat.heapPer - bare.heapPer
  const target = TARGETS[plan.protocol]
  const checks = [
    [`wake-all ≤ ${ms(target)}`, chat.wakeAllMs <= target, ms(chat.wakeAllMs)],
    [`heap per waiter ≤ bare + ${kib(HEAP_MARGIN)}`, overhead <= HEAP_MARGIN, `+${kib(overhead)}`],
    ['zero lost, zero duplicated', chat.report.lost === 0 && chat.report.duplicated === 0 && chat.report.wrong === 0, `${chat.report.lost} lost, ${chat.report.duplicated} duplicated, ${chat.report.wrong} wrong`],
    ['no waiter left after the publish', chat.leftAfter === 0, String(chat.leftAfter)]
  ] as const
  console.log(`\nwake-all per round: chat ${chat.rounds.map(ms).join(', ')}; bare ${bare.rounds.map(ms).join(', ')} (the table shows the median round; delivered, lost and duplicated count every round)`)
  console.log(`opening the polls took ${ms(chat.openMs)} (bare ${ms(bare.openMs)}); load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  for (const [what, ok, value] of checks) {
    console.log(`- ${ok ? 'PASS' : 'FAIL'} ${what}: ${value}`)
    if (!ok) failed = true
  }
  console.log('')
}
process.exitCode = failed ? 1 : 0
