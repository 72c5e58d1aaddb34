// `npm run bench`: every way of calling an upstream from Fastify, side by side, in one run.
//
//   npm run bench                 full run (3 rounds of 8 s per target and body)
//   npm run bench -- --quick      2 rounds of 2 s (under two minutes)
//   npm run bench -- --scale      also run the scale benchmark (see scale.ts)
//   npm run bench:scale           only the scale benchmark
//   options: --rounds=N --duration=S --warmup=S --connections=N --only=pipe-url,ceiling
//            --baseline=DIR  also measure the asyncRoute targets with the plugin sources in
//                            DIR (a copy of plugin/ from before a change), marked "@base"
//
// Each server under test runs in its own process pinned to core 0; the upstream and
// autocannon are pinned to core 1, so the server is the bottleneck. Targets alternate within
// each round (the order rotates from round to round) and the table shows medians.
import { CLIENT_CORE, flag, machine, median, option, ROOT, run, SERVER_CORE, startChild, stringOption, TARGETS, versions, type Target } from './common.js'
import { runScale } from './scale.js'

const argv = process.argv.slice(2)
const quick = flag(argv, 'quick')
const rounds = option(argv, 'rounds', quick ? 2 : 3)
const duration = option(argv, 'duration', quick ? 2 : 8)
const warmup = option(argv, 'warmup', quick ? 1 : 2)
const connections = option(argv, 'connections', 100)
const only = stringOption(argv, 'only')?.split(',')
const baseline = stringOption(argv, 'baseline')
const PLUGIN_TARGETS = new Set<string>(['pipe-url', 'fetch-pipe', 'upstream-pipe', 'finish-json'])

const UPSTREAM_TARGETS: Target[] = ['pipe-url', 'fetch-pipe', 'upstream-pipe', 'undici-send', 'reply-from', 'ceiling']
const LOCAL_TARGETS: Target[] = ['finish-json', 'plain-json']
const BODIES = ['/small', '/large'] as const

interface Sample { rps: number, p50: number, p99: number, errors: number }

interface AutocannonResult {
  requests: { average: number }
  latency: { p50: number, p99: number }
  errors: number
  timeouts: number
  non2xx: number
}

async function autocannon (url: string, seconds: number): Promise<Sample> {
  const out = await run('taskset', ['-c', CLIENT_CORE, process.execPath, `${ROOT}node_modules/autocannon/autocannon.js`,
    '-c', String(connections), '-d', String(seconds), '-j', url])
  const result = JSON.parse(out) as AutocannonResult
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx
  }
}

async function measure (name: string, upstream: string, paths: readonly string[], samples: Map<string, Sample[]>): Promise<void> {
  const [target, variant] = name.split('@') as [Target, string | undefined]
  const env = variant === 'base' ? { ...process.env, BENCH_PLUGIN: `${ROOT}${baseline ?? ''}/index.ts` } : process.env
  const server = startChild(SERVER_CORE, 'bench/servers.ts', [target, upstream], [], env)
  try {
    const { port } = await server.ready as { port: number }
    for (const path of paths) {
      const url = `http://127.0.0.1:${port}${path}`
      await autocannon(url, warmup)
      const sample = await autocannon(url, duration)
      const key = `${name} ${path}`
      samples.set(key, [...(samples.get(key) ?? []), sample])
      process.stderr.write(`  ${key.padEnd(22)} ${Math.round(sample.rps).toString().padStart(7)} req/s  p50 ${sample.p50} ms  p99 ${sample.p99} ms${sample.errors > 0 ? `  ${sample.errors} errors` : ''}\n`)
    }
  } finally {
    await server.stop()
  }
}

function rotate<T> (list: T[], by: number): T[] {
  const n = by % list.length
  return [...list.slice(n), ...list.slice(0, n)]
}

interface Row { rps: number, p50: number, p99: number, errors: number }

function summarize (samples: Sample[]): Row {
  return {
    rps: median(samples.map((s) => s.rps)),
    p50: median(samples.map((s) => s.p50)),
    p99: median(samples.map((s) => s.p99)),
    errors: samples.reduce((sum, s) => sum + s.errors, 0)
  }
}

function label (name: string): string {
  const [target, variant] = name.split('@') as [Target, string | undefined]
  return variant === undefined ? TARGETS[target] : `${TARGETS[target]} — before (${baseline ?? ''})`
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')
const ratio = (a: number, b: number | undefined): string => b === undefined || b === 0 ? '–' : `${(a / b).toFixed(2)}×`

async function main (): Promise<void> {
  console.log(`# fastify-async-route benchmarks (${quick ? 'quick' : 'full'})`)
  console.log(`Machine: ${machine()}`)
  console.log(versions())
  if (!flag(argv, 'scale-only')) {
    console.log(`autocannon -c ${connections}, ${rounds} rounds × ${duration} s per target and body (after ${warmup} s warm-up), medians; server on core ${SERVER_CORE}, upstream + autocannon on core ${CLIENT_CORE}\n`)
    const started = Date.now()
    const upstream = startChild(CLIENT_CORE, 'bench/upstream.ts', [])
    const samples = new Map<string, Sample[]>()
    try {
      const { port, small, large } = await upstream.ready as { port: number, small: number, large: number }
      const upstreamUrl = `http://127.0.0.1:${port}`
      const targets: string[] = [...UPSTREAM_TARGETS, ...LOCAL_TARGETS].filter((t) => only === undefined || only.includes(t))
      if (baseline !== undefined) targets.push(...targets.filter((t) => PLUGIN_TARGETS.has(t)).map((t) => `${t}@base`))
      for (let round = 0; round < rounds; round++) {
        process.stderr.write(`round ${round + 1}/${rounds}\n`)
        for (const target of rotate(targets, round)) {
          await measure(target, upstreamUrl, target.startsWith('finish-json') || target === 'plain-json' ? ['/json'] : BODIES, samples)
        }
      }
      console.log(`Upstream bodies: /small ${small} B JSON, /large ${large / 1024} KiB\n`)
    } finally {
      await upstream.stop()
    }
    printTables(samples)
    console.log(`\n(${Math.round((Date.now() - started) / 1000)} s)`)
  }
  if (flag(argv, 'scale') || flag(argv, 'scale-only')) await runScale(argv)
}

function printTables (samples: Map<string, Sample[]>): void {
  const row = (key: string): Row | undefined => {
    const list = samples.get(key)
    return list === undefined ? undefined : summarize(list)
  }
  console.log('| target | body | req/s | p50 ms | p99 ms | × reply-from | × ceiling |')
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  for (const path of BODIES) {
    const replyFrom = row(`reply-from ${path}`)
    const ceiling = row(`ceiling ${path}`)
    for (const name of UPSTREAM_TARGETS.flatMap((t) => [t, `${t}@base`])) {
      const r = row(`${name} ${path}`)
      if (r === undefined) continue
      const errors = r.errors > 0 ? ` (${r.errors} errors)` : ''
      console.log(`| ${label(name)} | ${path.slice(1)} | ${fmt(r.rps)}${errors} | ${r.p50} | ${r.p99} | ${ratio(r.rps, replyFrom?.rps)} | ${ratio(r.rps, ceiling?.rps)} |`)
    }
  }
  const plain = row('plain-json /json')
  const finish = row('finish-json /json')
  if (plain !== undefined || finish !== undefined) {
    console.log('\n| no upstream | req/s | p50 ms | p99 ms | × plain Fastify |')
    console.log('| --- | ---: | ---: | ---: | ---: |')
    for (const [name, r] of [['finish-json', finish], ['finish-json@base', row('finish-json@base /json')], ['plain-json', plain]] as const) {
      if (r === undefined) continue
      const errors = r.errors > 0 ? ` (${r.errors} errors)` : ''
      console.log(`| ${label(name)} | ${fmt(r.rps)}${errors} | ${r.p50} | ${r.p99} | ${ratio(r.rps, plain?.rps)} |`)
    }
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
