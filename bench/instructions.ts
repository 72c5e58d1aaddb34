// Instructions per request, counted by valgrind's callgrind: a figure the machine's noise does
// not move. Each server under test runs under callgrind (everything it executes in user space,
// all threads: the JIT's code, V8, Node, libuv, libc; not the kernel), serves a warm-up, then
// its counters are zeroed, it serves the measured requests, and they are dumped. Requests go one
// at a time per connection from this process over `--connections` keep-alive connections, so
// each server is measured in the same regime: under callgrind every server is slow enough that
// requests are handled about one per wake-up, as at the low end of the rate curve.
//
// npm run bench:instructions [-- --only=ceiling,hijack-stream,pipe-url --bodies=small,large,json
//   --warmup=N --requests=N --connections=N --rounds=N --baseline=DIR --server-flags="…"]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Pool } from 'undici'
import { instructionsByFunction } from './callgrind.js'
import { CLIENT_CORE, machine, option, ROOT, run, SERVER_CORE, startChild, stringOption, versions, type Child } from './common.js'
import { alsoOf, floorOf, info, isTarget, referenceOf, SCENARIOS, TARGETS, type Scenario, type Target } from './targets.js'

const argv = process.argv.slice(2)
/** The rate curve's targets: the proxy paths, their floor and references; finish(json) and its own. */
const DEFAULT_TARGETS: readonly Target[] = ['ceiling', 'hijack-stream', 'pipe-url', 'reply-from', 'forward-get', 'fetch-pipe', 'plain-json', 'hijack-json', 'finish-json']
const only = stringOption(argv, 'only')?.split(',') ?? DEFAULT_TARGETS
for (const name of only) if (!isTarget(name)) throw new Error(`--only: unknown target ${name}`)
const bodyNames = (stringOption(argv, 'bodies') ?? 'small,large,json').split(',')
const scenarios: Scenario[] = []
for (const name of bodyNames) {
  const scenario = SCENARIOS.find((candidate) => candidate.name === name)
  if (scenario === undefined || scenario.post !== undefined) throw new Error('--bodies takes small, large and/or json')
  scenarios.push(scenario)
}
// A long warm-up: V8 optimises a function only after many calls, and with --single-threaded its
// compilers run on the main thread, in the count. After 3,000 requests the optimising compiler
// was still at work (a 104 B relay counted 230,000 instructions per request, 138,000 after
// 15,000 requests); what is counted must be the steady state a busy server runs in.
const warmup = option(argv, 'warmup', 15000)
const requests = option(argv, 'requests', 8000)
const connections = option(argv, 'connections', 4)
const rounds = option(argv, 'rounds', 2)
const baseline = stringOption(argv, 'baseline')
// --single-threaded by default: V8's collector and compilers then work on the main thread, where
// the count is the same from run to run, instead of on worker threads that run when they do.
// The young generation has a fixed size (16 MiB semi-spaces): V8 otherwise resizes it as it
// goes, and how often it was scavenged moved a JSON route's count by about 3,300 instructions
// per request from one fresh server to the next. (With a fixed size, how often a route is
// scavenged follows what it allocates: one that allocates more still collects more.)
const DEFAULT_FLAGS = '--single-threaded --min-semi-space-size=16 --max-semi-space-size=16'
const serverFlags = (stringOption(argv, 'server-flags') ?? DEFAULT_FLAGS).split(' ').filter((flag) => flag !== '')
const node = stringOption(argv, 'node') ?? process.execPath

interface Variant { name: string, target: Target, env: NodeJS.ProcessEnv }
function variantsOf (scenario: Scenario): Variant[] {
  const variants: Variant[] = []
  for (const target of scenario.targets) {
    if (!only.includes(target)) continue
    variants.push({ name: target, target, env: process.env })
    if (baseline !== undefined && info(target).plugin) {
      variants.push({ name: `${target}@base`, target, env: { ...process.env, BENCH_PLUGIN: path.resolve(ROOT, baseline, 'index.ts') } })
    }
  }
  return variants
}

const outDir = mkdtempSync(path.join(os.tmpdir(), 'callgrind-'))

/** The server of `variant` under callgrind, its counters running from the start. */
function startServer (variant: Variant, upstream: string): Child {
  return startChild(SERVER_CORE, 'bench/servers.ts', [variant.target, upstream], {
    env: variant.env,
    nodeFlags: serverFlags,
    node,
    wrapper: ['valgrind', '--tool=callgrind', '--smc-check=all-non-file', `--callgrind-out-file=${outDir}/cg.%p`, '--dump-instr=no', '--compress-strings=no']
  })
}

/** `count` GETs of `path`, one at a time on each of the pool's connections. */
async function load (pool: Pool, urlPath: string, count: number): Promise<void> {
  let left = count
  const worker = async (): Promise<void> => {
    while (left > 0) {
      left--
      const { statusCode, body } = await pool.request({ method: 'GET', path: urlPath })
      await body.dump({ limit: Infinity })
      if (statusCode !== 200) throw new Error(`${urlPath}: status ${statusCode}`)
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
}

// V8's garbage collector, by the names of its own functions (C++, not the JIT's code): a round
// whose window held a major collection counts tens of thousands of instructions per request
// more than one that did not, whichever route it measures. Approximate: what a collection leaves
// behind (colder caches, re-filled inline caches) is in the route's own functions.
const COLLECTOR = /(?:^|[\s<])(?:heap::base::|v8::internal::(?:[\w ()]+::)*?(?:\w*Scaveng|\w*Marking|MarkCompact|Sweeper|\w*Evacuat|RememberedSet|Heap::OnMoveEvent|Heap::CollectGarbage|IterateObjectCache|LiveObjectVisitor|BodyDescriptorBase::IteratePointers|HeapObject::SizeFromMap|FreeList|ConcurrentMarking|IncrementalMarking|MinorMarkSweep))/
/** A round whose collector's share is above this fraction of its count: a major collection fell in its window. */
const DISTURBED = 0.1

// V8's optimising compilers (TurboFan, Maglev), by the names of their functions. A round in
// whose window a hot function of Node's was deoptimised (under callgrind's slow clock, a timer
// can find a stream writer in a state it was not optimised for) recompiles it there: ~1,700
// instructions per request more for compiling, and a few hundred more for the slower code that
// runs meanwhile, whichever route it measures.
const COMPILERS = /(?:^|[\s<])v8::internal::(?:compiler|maglev)::|(?:^|[\s<])v8::internal::Compiler::/

interface Shares { collector: number, compilers: number }

/** Instructions in V8's collector and in its optimising compilers, from the dump `file`. */
async function sharesOf (file: string): Promise<Shares> {
  const shares: Shares = { collector: 0, compilers: 0 }
  for (const [name, count] of await instructionsByFunction(file)) {
    if (COLLECTOR.test(name)) shares.collector += count
    else if (COMPILERS.test(name)) shares.compilers += count
  }
  return shares
}

/** The instructions counted since the last zeroing, from callgrind's dump of `pid`. */
async function dumpCount (pid: number): Promise<{ count: number, file: string }> {
  const before = new Set(readdirSync(outDir))
  await run('callgrind_control', ['--dump', String(pid)])
  const file = readdirSync(outDir).find((name) => name.startsWith(`cg.${pid}.`) && !before.has(name))
  if (file === undefined) throw new Error(`no callgrind dump for ${pid}`)
  const totals = /^(?:totals|summary): (\d+)/m.exec(readFileSync(path.join(outDir, file), 'utf8'))
  if (totals === null) throw new Error(`no totals in ${file}`)
  return { count: Number(totals[1]), file: path.join(outDir, file) }
}

const upstreamChild = startChild(CLIENT_CORE, 'bench/upstream.ts', [])
const { port: upstreamPort } = await upstreamChild.ready as { port: number }
const upstream = `http://127.0.0.1:${upstreamPort}`
console.log('# Instructions per request (valgrind callgrind)\n')
console.log(`Machine: ${machine()}`)
console.log(versions((await run(node, ['--version'])).trim()))
console.log(`Servers run under \`valgrind --tool=callgrind\` with \`${serverFlags.join(' ') || 'no flags'}\`.`)
console.log(`${warmup} requests of warm-up, then ${requests} counted, over ${connections} keep-alive connections, one request at a time on each; ${rounds} round(s), each a fresh server per target.\n`)

/** Per request: the whole count, and what V8's collector and compilers took of it; the window's major collections. */
interface Round { count: number, collector: number, compilers: number, majors: number }
const results = new Map<string, Round[]>()
const disturbed = (round: Round): boolean => round.majors > 0 || round.collector > DISTURBED * round.count
try {
  for (let round = 1; round <= rounds; round++) {
    for (const scenario of scenarios) {
      const variants = variantsOf(scenario)
      for (const variant of round % 2 === 1 ? variants : variants.reverse()) {
        const server = startServer(variant, upstream)
        try {
          const ready = await server.ready as { port?: number, error?: string }
          if (ready.port === undefined) throw new Error(ready.error ?? 'no port')
          const pool = new Pool(`http://127.0.0.1:${ready.port}`, { connections, pipelining: 1 })
          await load(pool, scenario.path, warmup)
          const collectionsBefore = await server.ask('collections') as number
          await run('callgrind_control', ['--zero', String(server.proc.pid)])
          await load(pool, scenario.path, requests)
          const dump = await dumpCount(server.proc.pid as number)
          const majors = (await server.ask('collections') as number) - collectionsBefore
          const count = dump.count / requests
          const shares = await sharesOf(dump.file)
          const collector = shares.collector / requests
          const compilers = shares.compilers / requests
          await pool.close()
          const key = `${variant.name} ${scenario.path}`
          results.set(key, [...(results.get(key) ?? []), { count, collector, compilers, majors }])
          const kept = process.env.KEEP_CALLGRIND === undefined ? '' : `  ${dump.file}`
          console.log(`  ${round} ${scenario.path.padEnd(7)} ${variant.name.padEnd(22)} ${thousands(count).padStart(9)} instructions/request (V8's collector ${thousands(collector)}, compilers ${thousands(compilers)}; major collections ${majors})${kept}`)
        } finally {
          await server.stop()
        }
      }
    }
  }
} finally {
  await upstreamChild.stop()
  if (process.env.KEEP_CALLGRIND === undefined) rmSync(outDir, { recursive: true, force: true })
  else console.log(`callgrind dumps kept in ${outDir}`)
}

function thousands (value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

/**
 * A round that spent more than this share of its count in V8's compilers beyond the route's
 * quietest round recompiled something in its window. (What each round spends there anyway
 * varies by route: 1–2.5 % for the JSON, 6–7 % at 104 B, where V8 is still compiling a little
 * after 15,000 requests; one recompilation in the window adds about 3 %.)
 */
const RECOMPILED = 0.01
function recompiled (round: Round, rounds: readonly Round[]): boolean {
  const quietest = Math.min(...rounds.map((other) => other.compilers))
  return round.compilers - quietest > RECOMPILED * round.count
}

/**
 * The mean over the rounds with neither a major collection nor a recompilation in their window
 * (over all of them if none is), or undefined if the variant did not run.
 */
function mean (name: string, scenario: Scenario): number | undefined {
  const rounds = results.get(`${name} ${scenario.path}`)
  if (rounds === undefined) return undefined
  const quiet = rounds.filter((round) => !disturbed(round) && !recompiled(round, rounds))
  const chosen = quiet.length > 0 ? quiet : rounds
  return chosen.reduce((sum, round) => sum + round.count, 0) / chosen.length
}

/** "0.956 × ceiling" (reference ÷ variant, as the CPU tables), or nothing if either did not run. */
function ratio (name: string, reference: Target | undefined, scenario: Scenario): string | undefined {
  if (reference === undefined) return undefined
  const own = mean(name, scenario)
  const theirs = mean(reference, scenario)
  if (own === undefined || theirs === undefined) return undefined
  return `${(theirs / own).toFixed(3)} × ${TARGETS[reference].short}`
}

console.log(`\nRatios are reference ÷ route (higher is better), from the mean of the rounds; the rounds show how much the count moves from one fresh server to the next. † a major collection in the round's window (counted by the server, or more than ${DISTURBED * 100} % of its count in V8's collector), ‡ more than ${RECOMPILED * 100} % more in its compilers than the route's quietest round (something recompiled in its window): left out of the mean unless every round of the route is.\n`)
console.log('| route | body | instructions / request, by round | vs reference (goal) | vs floor, second comparison |\n| --- | --- | ---: | --- | --- |')
for (const scenario of scenarios) {
  for (const variant of variantsOf(scenario)) {
    const rounds = results.get(`${variant.name} ${scenario.path}`) ?? []
    const reference = referenceOf(variant.name)
    const goal = info(variant.target).goal
    const versus = ratio(variant.name, reference, scenario)
    const also = alsoOf(variant.name)
    const notes = [ratio(variant.name, floorOf(variant.name), scenario), also === undefined ? undefined : `${ratio(variant.name, also.reference, scenario) ?? '—'} (goal ${also.goal.toFixed(2)})`]
    const byRound = rounds.map((round) => `${thousands(round.count)}${disturbed(round) ? ' †' : ''}${recompiled(round, rounds) ? ' ‡' : ''}`).join(' / ')
    console.log(`| ${variant.name} | ${scenario.label} | ${byRound} | ${versus === undefined ? '—' : `${versus}${goal === undefined ? '' : ` (goal ${goal.toFixed(2)})`}`} | ${notes.filter((note) => note !== undefined).join('; ') || '—'} |`)
  }
}
