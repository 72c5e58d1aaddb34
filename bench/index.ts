// `npm run bench`: the server's CPU time per request at a fixed offered rate, for every way of
// calling an upstream from Fastify (and of answering without one), each against its reference.
//
//   npm run bench                 4 rounds × 3 s per target and body, 4,000 req/s offered (JSON: 7,000)
//   npm run bench:quick           2 rounds × 2 s (a few minutes)
//   npm run bench -- --scale      also run the scale benchmark (see scale.ts)
//   npm run bench:scale           only the scale benchmark
//   options: --rounds=N --duration=S --warmup=S --connections=N
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
//            --overload-rounds=N   batches of each kind in the scale overload comparison (9)
//            --undici8             add the undici 8 targets (ceiling-undici8, pipe-url-undici8;
//                                  the server's Node must be ≥ 22.19)
//            --baseline=DIR        also measure the asyncRoute targets with the plugin sources in
//                                  DIR (a copy of plugin/ from before a change), marked "@base",
//                                  and show each target's efficiency vs its "@base" run
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
import { CLIENT_CORE, flag, machine, option, run, SERVER_CORE, startChild, stringOption, versions } from './common.js'
import { measure, type Settings } from './measure.js'
import { printCpuTable, printSaturatedTable } from './report.js'
import { runScale } from './scale.js'
import { info, isTarget, SCENARIOS, TARGETS, type Scenario, type Target } from './targets.js'

const argv = process.argv.slice(2)
const quick = flag(argv, 'quick')
const only = stringOption(argv, 'only')?.split(',')
const bodies = stringOption(argv, 'bodies')?.split(',')
const baseline = stringOption(argv, 'baseline')
const rate = option(argv, 'rate', 4000)
const rateJson = option(argv, 'rate-json', 7000)
const rateLarge = option(argv, 'rate-large', 1500)
const ratePost1k = option(argv, 'rate-post1k', 800)
const ratePost1m = option(argv, 'rate-post1m', 40)
const RATES: Record<Scenario['name'], number> = { small: rate, large: rateLarge, json: rateJson, post1k: ratePost1k, post1m: ratePost1m }

for (const name of only ?? []) if (!isTarget(name)) throw new Error(`--only: unknown target ${name} (one of ${Object.keys(TARGETS).join(', ')})`)

function targetNames (): string[] {
  const wanted = (target: Target): boolean => only !== undefined ? only.includes(target) : info(target).undici8 !== true || flag(argv, 'undici8')
  const names: string[] = []
  for (const target of new Set(SCENARIOS.flatMap((s) => s.targets))) {
    if (!wanted(target)) continue
    names.push(target)
    if (baseline !== undefined && info(target).plugin) names.push(`${target}@base`)
  }
  return names
}

const settings: Settings = {
  rounds: option(argv, 'rounds', quick ? 2 : 4),
  duration: option(argv, 'duration', quick ? 2 : 3),
  warmup: option(argv, 'warmup', 1),
  slices: option(argv, 'slices', 3),
  saturated: flag(argv, 'no-saturated') ? 0 : option(argv, 'saturated', quick ? 1 : 2),
  connections: option(argv, 'connections', 100),
  rate: (scenario) => RATES[scenario.name],
  node: stringOption(argv, 'node') ?? process.execPath,
  baseline,
  names: targetNames(),
  scenarios: SCENARIOS.filter((s) => bodies === undefined || bodies.includes(s.name))
}

async function main (): Promise<void> {
  console.log(`# fastify-async-route benchmarks (${quick ? 'quick' : 'full'})\n`)
  console.log(`Machine: ${machine()}`)
  if (!flag(argv, 'scale-only')) await runRates()
  if (flag(argv, 'scale') || flag(argv, 'scale-only')) await runScale(argv)
}

async function runRates (): Promise<void> {
  const started = Date.now()
  const upstream = startChild(CLIENT_CORE, 'bench/upstream.ts', [])
  let results
  try {
    const { port, small, large } = await upstream.ready as { port: number, small: number, large: number }
    results = await measure(`http://127.0.0.1:${port}`, settings)
    console.log(versions(results.serverNode === '' ? (await run(settings.node, ['--version'])).trim() : results.serverNode))
    console.log(`Upstream bodies: /small ${small} B JSON, /large ${large / 1024} KiB; POST /echo-size/* answers the request body's length (~15 B JSON). Server on core ${SERVER_CORE}; upstream and the load client (a steady paced undici client over ${settings.connections} connections; autocannon for saturated runs) on core ${CLIENT_CORE}.`)
  } finally {
    await upstream.stop()
  }
  const { rounds, duration, warmup, saturated, slices } = settings
  console.log(`${rounds} rounds; per target and body: ${warmup} s warm-up, then ${duration} s at ${rate.toLocaleString('en-US')} req/s offered (no upstream: ${rateJson.toLocaleString('en-US')}; 64 KiB: ${rateLarge.toLocaleString('en-US')}; POST 1 KiB: ${ratePost1k.toLocaleString('en-US')}; POST 1 MiB: ${ratePost1m.toLocaleString('en-US')}) from a steady paced client, in ${slices} slices that take turns between the targets (A B C, C B A, …; the order reversed every other round).`)
  console.log('CPU = the server process\'s user + system time (process.cpuUsage(), all threads) over a slice ÷ its 2xx responses; a round\'s figure is the median of its slices.')
  console.log('Efficiency = reference CPU ÷ target CPU, paired in each round; geometric mean of the rounds, (min–max) of the paired ratios.\n')
  printCpuTable(results, settings.names, settings.scenarios, baseline)
  if (saturated > 0) {
    console.log(`\nSaturated (secondary; ${saturated} s per target and body and round, autocannon -c ${settings.connections}, no rate limit; req/s on a shared machine moves with its load):\n`)
    printSaturatedTable(results, settings.names, settings.scenarios, baseline)
  }
  console.log(`\n(${Math.round((Date.now() - started) / 1000)} s)`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
