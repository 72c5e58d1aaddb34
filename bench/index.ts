// `npm run bench`: the server's CPU time per request at a fixed offered rate, for every way of
// calling an upstream from Fastify (and of answering without one), each against its reference.
//
//   npm run bench                 4 rounds × 3 s per target and body, 4,000 req/s offered (JSON: 7,000)
//   npm run bench:quick           2 rounds × 2 s (a few minutes)
//   npm run bench -- --scale      also run the scale benchmark (see scale.ts)
//   npm run bench:scale           only the scale benchmark
//   npm run bench:curve           the rate curve: the 104 B body and the no-upstream JSON at
//                                 2,000, 4,000 and 6,000 req/s offered and the 64 KiB body at
//                                 500, 1,000 and 1,500, over 64 connections, one table per body
//                                 and rate (see runCurve)
//   options: --rounds=N --duration=S --warmup=S (0: none)
//            --connections=N       keep-alive connections of the load client (100; --curve: 64)
//            --slices=N            slices of each window, taking turns between targets (3)
//            --rate=R              offered req/s for the 104 B body (4000)
//            --rate-json=R         offered req/s for the no-upstream JSON (7000)
//            --rate-large=R        offered req/s for the 64 KiB body (1500: the ceiling itself saturated near 3,000)
//            --saturated=S         seconds of the saturated run after each window (2; --no-saturated: none)
//            --only=pipe-url,ceiling   only these targets (names in targets.ts)
//            --rate-post1k=R       offered req/s for the POST 1 KiB body (800)
//            --rate-post1m=R       offered req/s for the POST 1 MiB body (40)
//            --bodies=small,json   only these bodies (small, large, json, post1k, post1m)
//            --node=PATH           run the servers under this Node binary
//            --server-flags="F …"  Node flags for every server under test, e.g.
//                                  "--max-semi-space-size=4" (see docs/benchmarks.md, 64 KiB)
//            --overload-rounds=N   batches of each kind in the scale overload comparison (9)
//            --undici8             add the undici 8 targets (ceiling-undici8, pipe-url-undici8;
//                                  the server's Node must be ≥ 22.19)
//            --baseline=DIR        also measure the asyncRoute targets with the plugin sources in
//                                  DIR (a copy of plugin/ from before a change), marked "@base",
//                                  and show each target's efficiency vs its "@base" run
//   curve options (with --curve):
//            --rates-small=R,R,…   offered req/s for the 104 B body (2000,4000,6000)
//            --rates-large=R,R,…   offered req/s for the 64 KiB body (500,1000,1500)
//            --rates-json=R,R,…    offered req/s for the no-upstream JSON (2000,4000,6000)
//            targets: ceiling, hijack-stream (the floor of any Fastify route that proxies),
//            pipe-url, reply-from, forward-get, fetch-pipe, plain-json, hijack-json (the
//            floor of any hijacking route), finish-json unless --only=; an asyncRoute target
//            with a floor notes "× hijack + stream" or "× hijack + end": what the plugin adds;
//            bodies: small, large and json (--bodies= picks among them); no saturated runs
//            unless --saturated=S. Each table adds what the load client achieved ("sent X of Y req/s",
//            the lowest round) and how many requests it wrote more than 5 ms late. The warm-up
//            (2 s unless --warmup=) runs at the body's highest rate, whatever the point's rate:
//            every target has served as many requests before a window at 2,000 req/s as at
//            6,000 (12,000 for the 104 B body and the JSON, 3,000 for 64 KiB), so that a path
//            with more code than its reference is not measured before V8 has optimised it.
//
// Each server under test runs in its own process pinned to core 0; the upstream and the
// paced load client (autocannon for the saturated runs) are pinned to core 1. The upstream
// bodies are offered at 4,000 req/s, not more: core 1 serves the upstream *and* generates the
// load, and above ~5,000 req/s it fell behind in this machine's slow minutes, which showed as
// "below the offered rate" on the ceiling itself.
// Why CPU time and not req/s: on a shared machine the speed
// swings from minute to minute, and at saturation the load generator can set the figure; the
// server's CPU time per request at a rate below every target's saturation measures the server
// alone, and pairing each target with its reference in the same round cancels most of the drift.
import { CLIENT_CORE, flag, machine, numbersOption, option, run, SERVER_CORE, startChild, stringOption, versions } from './common.js'
import { measure, type Results, type Settings } from './measure.js'
import { printCpuTable, printSaturatedTable } from './report.js'
import { runScale } from './scale.js'
import { info, isTarget, SCENARIOS, TARGETS, type Scenario, type Target } from './targets.js'

const argv = process.argv.slice(2)
const quick = flag(argv, 'quick')
const curve = flag(argv, 'curve')
const only = stringOption(argv, 'only')?.split(',')
const bodies = stringOption(argv, 'bodies')?.split(',')
const baseline = stringOption(argv, 'baseline')
const rate = option(argv, 'rate', 4000)
const rateJson = option(argv, 'rate-json', 7000)
const rateLarge = option(argv, 'rate-large', 1500)
const ratePost1k = option(argv, 'rate-post1k', 800)
const ratePost1m = option(argv, 'rate-post1m', 40)
const RATES: Record<Scenario['name'], number> = { small: rate, large: rateLarge, json: rateJson, post1k: ratePost1k, post1m: ratePost1m }
/** `--curve`: the offered rates per body, and the targets unless `--only=` names others. */
const CURVE_RATES: Partial<Record<Scenario['name'], number[]>> = {
  small: numbersOption(argv, 'rates-small', [2000, 4000, 6000]),
  large: numbersOption(argv, 'rates-large', [500, 1000, 1500]),
  json: numbersOption(argv, 'rates-json', [2000, 4000, 6000])
}
const CURVE_TARGETS: readonly Target[] = ['ceiling', 'hijack-stream', 'pipe-url', 'reply-from', 'forward-get', 'fetch-pipe', 'plain-json', 'hijack-json', 'finish-json']

for (const name of only ?? []) if (!isTarget(name)) throw new Error(`--only: unknown target ${name} (one of ${Object.keys(TARGETS).join(', ')})`)

const scenarios = SCENARIOS.filter((s) => (bodies === undefined || bodies.includes(s.name)) && (!curve || CURVE_RATES[s.name] !== undefined))

function targetNames (): string[] {
  const wanted = (target: Target): boolean => only !== undefined
    ? only.includes(target)
    : curve ? CURVE_TARGETS.includes(target) : info(target).undici8 !== true || flag(argv, 'undici8')
  const names: string[] = []
  for (const target of new Set(scenarios.flatMap((s) => s.targets))) {
    if (!wanted(target)) continue
    names.push(target)
    if (baseline !== undefined && info(target).plugin) names.push(`${target}@base`)
  }
  return names
}

const settings: Settings = {
  rounds: option(argv, 'rounds', quick ? 2 : 4),
  duration: option(argv, 'duration', quick ? 2 : 3),
  warmup: option(argv, 'warmup', curve ? 2 : 1, true),
  slices: option(argv, 'slices', 3),
  saturated: flag(argv, 'no-saturated') ? 0 : option(argv, 'saturated', curve ? 0 : quick ? 1 : 2),
  connections: option(argv, 'connections', curve ? 64 : 100),
  rate: (scenario) => RATES[scenario.name],
  node: stringOption(argv, 'node') ?? process.execPath,
  serverFlags: stringOption(argv, 'server-flags')?.split(' ').filter((flag) => flag !== '') ?? [],
  baseline,
  names: targetNames(),
  scenarios
}

async function main (): Promise<void> {
  console.log(`# fastify-async-route benchmarks (${curve ? 'rate curve' : quick ? 'quick' : 'full'})\n`)
  console.log(`Machine: ${machine()}`)
  if (curve) await runCurve()
  else if (!flag(argv, 'scale-only')) await runRates()
  if (flag(argv, 'scale') || flag(argv, 'scale-only')) await runScale(argv)
}

/** Starts the upstream, runs `use` against it, then prints the versions and the set-up. */
async function withUpstream<T extends { serverNode: string }> (use: (url: string) => Promise<T>): Promise<T> {
  const upstream = startChild(CLIENT_CORE, 'bench/upstream.ts', [])
  try {
    const { port, small, large } = await upstream.ready as { port: number, small: number, large: number }
    const result = await use(`http://127.0.0.1:${port}`)
    console.log(versions(result.serverNode === '' ? (await run(settings.node, ['--version'])).trim() : result.serverNode))
    console.log(`Upstream bodies: /small ${small} B JSON, /large ${large / 1024} KiB; POST /echo-size/* answers the request body's length (~15 B JSON). Server on core ${SERVER_CORE}${settings.serverFlags.length > 0 ? ` (node ${settings.serverFlags.join(' ')})` : ''}; upstream and the load client (a steady paced undici client over ${settings.connections} connections; autocannon for saturated runs) on core ${CLIENT_CORE}.`)
    return result
  } finally {
    await upstream.stop()
  }
}

function printMethod (offered: string): void {
  const { rounds, duration, warmup, slices } = settings
  const warmupAt = curve ? ' at the body\'s highest rate' : ''
  console.log(`${rounds} rounds; per target and body: ${warmup} s warm-up${warmupAt}, then ${duration} s at ${offered} from a steady paced client, in ${slices} slices that take turns between the targets (A B C, C B A, …; the order reversed every other round).`)
  console.log('CPU = the server process\'s user + system time (process.cpuUsage(), all threads) over a slice ÷ its 2xx responses; a round\'s figure is the median of its slices.')
  console.log('Efficiency = reference CPU ÷ target CPU, paired in each round; geometric mean of the rounds, (min–max) of the paired ratios.\n')
}

function printSaturated (results: Results, scenarios: readonly Scenario[]): void {
  console.log(`\nSaturated (secondary; ${settings.saturated} s per target and body and round, autocannon -c ${settings.connections}, no rate limit; req/s on a shared machine moves with its load):\n`)
  printSaturatedTable(results, settings.names, scenarios, baseline)
}

const fmt = (n: number): string => n.toLocaleString('en-US')

async function runRates (): Promise<void> {
  const started = Date.now()
  const results = await withUpstream(async (url) => await measure(url, settings))
  printMethod(`${fmt(rate)} req/s offered (no upstream: ${fmt(rateJson)}; 64 KiB: ${fmt(rateLarge)}; POST 1 KiB: ${fmt(ratePost1k)}; POST 1 MiB: ${fmt(ratePost1m)})`)
  printCpuTable(results, settings.names, settings.scenarios, baseline)
  if (settings.saturated > 0) printSaturated(results, settings.scenarios)
  console.log(`\n(${Math.round((Date.now() - started) / 1000)} s)`)
}

/**
 * The rate curve: the same measure at each offered rate of each body (`CURVE_RATES`), every
 * point its own set of rounds (fresh servers, targets paired with their references as always),
 * and one table per body and rate with what the load client achieved.
 */
async function runCurve (): Promise<void> {
  const started = Date.now()
  const points: Array<{ scenario: Scenario, offered: number, results: Results }> = []
  await withUpstream(async (url) => {
    let serverNode = ''
    for (const scenario of settings.scenarios) {
      const rates = CURVE_RATES[scenario.name] ?? []
      const highest = Math.max(...rates)
      for (const offered of rates) {
        process.stderr.write(`${scenario.label} at ${fmt(offered)} req/s offered\n`)
        const results = await measure(url, { ...settings, scenarios: [scenario], rate: () => offered, warmupRate: () => highest })
        points.push({ scenario, offered, results })
        if (results.serverNode !== '') serverNode = results.serverNode
      }
    }
    return { serverNode }
  })
  printMethod(`each offered rate (${settings.scenarios.map((s) => `${s.label}: ${(CURVE_RATES[s.name] ?? []).map(fmt).join(', ')} req/s`).join('; ')}), each rate its own rounds,`)
  console.log('Load client: "sent X of Y req/s" is the lowest round\'s 2xx answers per second against the offered rate; "late" counts the requests it wrote more than 5 ms after they were due (no free connection, or its own core behind).')
  for (const { scenario, offered, results } of points) {
    console.log(`\n**${scenario.label} at ${fmt(offered)} req/s offered**\n`)
    printCpuTable(results, settings.names, [scenario], baseline, { load: true })
    if (settings.saturated > 0) printSaturated(results, [scenario])
  }
  console.log(`\n(${Math.round((Date.now() - started) / 1000)} s)`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
