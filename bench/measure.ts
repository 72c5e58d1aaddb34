// The measuring loop. Every round starts one fresh server process per target (all pinned to
// the server core, idle until their turn), then, body by body: a warm-up of each target at the
// offered rate, then the measured window cut into slices that take turns — A B C, C B A, A B C
// … — so that a target and its reference are never more than a slice apart, and a few seconds
// of a slow machine land on every target alike rather than on one. A target's figure for the
// round is the median of its slices (the server's CPU time around each slice, over IPC, ÷ its
// 2xx answers). Then, optionally, a short saturated run of each. A target whose server does
// not start, or whose requests fail, is marked failed and skipped from then on instead of
// stopping the benchmark.
import path from 'node:path'
import { median, ROOT, SERVER_CORE, startChild, type Child } from './common.js'
import { autocannon, paced, type Load } from './load.js'
import { variant, type Scenario } from './targets.js'

export interface Settings {
  rounds: number
  /** Seconds of the measured window (in all), and of the warm-up before it. */
  duration: number
  warmup: number
  /**
   * The offered rate of the warm-up (default: the measured rate). The curve warms every point
   * at the body's highest rate, so that each target has served as many requests before its
   * window at 2,000 req/s as at 6,000.
   */
  warmupRate?: (scenario: Scenario) => number
  /** Slices the window is cut into, taking turns between targets. */
  slices: number
  /** Seconds of the saturated run after each window; 0 for none. */
  saturated: number
  connections: number
  /** Offered requests per second, per body. */
  rate: (scenario: Scenario) => number
  /** The Node binary for the servers. */
  node: string
  /** Node flags for every server under test (`--server-flags=`), the same for all of them. */
  serverFlags: readonly string[]
  /** A copy of plugin/ for the `@base` variants. */
  baseline?: string
  /** The variants to run, in scenario order (`pipe-url`, `pipe-url@base`, …). */
  names: readonly string[]
  scenarios: readonly Scenario[]
}

export interface Window {
  round: number
  /** Server CPU time (user + system) per 2xx response, µs: the median of the slices. */
  cpu: number
  offered: number
  /** 2xx responses per second over the window. */
  achieved: number
  /** Requests of the window's slices, and how many of them the load client wrote late (> 5 ms). */
  requests: number
  late: number
  saturated?: Load
}

export interface Results {
  /** Key: `${name} ${path}`. */
  windows: Map<string, Window[]>
  /** Why a variant (key: name) or a variant on one body (key: `${name} ${path}`) was dropped. */
  failures: Map<string, string>
  serverNode: string
}

interface Cpu { user: number, system: number }

export const key = (name: string, path: string): string => `${name} ${path}`

/** At most this share of failed requests is tolerated in a window. */
const MAX_FAILED = 0.001

function failedShare (load: Load): number {
  return load.failed / Math.max(1, load.ok + load.failed)
}

function startServer (name: string, upstream: string, settings: Settings): Child {
  const { target, base } = variant(name)
  const env = base ? { ...process.env, BENCH_PLUGIN: path.resolve(ROOT, settings.baseline ?? '', 'index.ts') } : process.env
  return startChild(SERVER_CORE, 'bench/servers.ts', [target, upstream], { env, node: settings.node, nodeFlags: [...settings.serverFlags] })
}

async function cpuTime (server: Child): Promise<number> {
  const { user, system } = await server.ask('cpu') as Cpu
  return user + system
}

/** A window that got no answers at all: skipped in this round, tried again in the next. */
class NoAnswer extends Error {}

function check (load: Load, what: string): void {
  if (load.ok + load.failed === 0) throw new NoAnswer(`no answer at all during the ${what} (machine overloaded?)`)
  if (load.ok === 0 || failedShare(load) > MAX_FAILED) throw new Error(`${load.failed} of ${load.ok + load.failed} requests failed in the ${what} (${load.failures})`)
}

/** One target under test on one body, and what its slices measured so far. */
interface Run {
  name: string
  server: Child
  url: string
  slices: number[]
  ok: number
  seconds: number
  requests: number
  late: number
}

/** One slice of `run`'s window: the server's CPU time around a paced load. */
async function measureSlice (run: Run, offered: number, seconds: number, settings: Settings, post?: number): Promise<void> {
  const before = await cpuTime(run.server)
  const load = await paced(run.url, seconds, settings.connections, offered, post)
  const after = await cpuTime(run.server)
  check(load, 'measured window')
  run.slices.push((after - before) / load.ok)
  run.ok += load.ok
  run.seconds += load.seconds
  run.requests += load.ok + load.failed
  run.late += load.late ?? 0
}

function toWindow (run: Run, round: number, offered: number): Window {
  return { round, cpu: median(run.slices), offered, achieved: run.ok / run.seconds, requests: run.requests, late: run.late }
}

function log (round: number, name: string, scenario: Scenario, w: Window): void {
  const saturated = w.saturated === undefined ? '' : `  | saturated ${Math.round(w.saturated.rps)} req/s, p99 ${w.saturated.p99} ms`
  const flag = (w.achieved < 0.97 * w.offered ? '  (below the offered rate)' : '') + (w.late > 0 ? `  (${w.late} of ${w.requests} sent late)` : '')
  process.stderr.write(`  ${round + 1} ${scenario.path.padEnd(13)} ${name.padEnd(22)} ${w.cpu.toFixed(1).padStart(6)} µs/req at ${Math.round(w.achieved)} of ${w.offered} req/s${flag}${saturated}\n`)
}

export async function measure (upstream: string, settings: Settings): Promise<Results> {
  const results: Results = { windows: new Map(), failures: new Map(), serverNode: '' }
  const { windows, failures } = results
  for (let round = 0; round < settings.rounds; round++) {
    process.stderr.write(`round ${round + 1}/${settings.rounds}\n`)
    const servers = new Map<string, Child>()
    try {
      const live = settings.names.filter((name) => !failures.has(name))
      const started = await Promise.all(live.map(async (name) => {
        const server = startServer(name, upstream, settings)
        servers.set(name, server)
        const ready = await server.ready.catch((error: unknown) => ({ error: String(error) })) as { port?: number, node?: string, error?: string }
        return { name, ready }
      }))
      const ports = new Map<string, number>()
      for (const { name, ready } of started) {
        if (ready.port !== undefined) {
          ports.set(name, ready.port)
          results.serverNode = ready.node ?? results.serverNode
        } else {
          failures.set(name, ready.error ?? 'did not start')
          process.stderr.write(`  ${name}: skipped, ${ready.error ?? 'did not start'}\n`)
        }
      }
      for (const scenario of settings.scenarios) {
        const order = settings.names.filter((name) => scenario.targets.includes(variant(name).target))
        if (round % 2 === 1) order.reverse()
        const offered = settings.rate(scenario)
        let runs: Run[] = []
        for (const name of order) {
          const port = ports.get(name)
          const server = servers.get(name)
          if (port === undefined || server === undefined || failures.has(key(name, scenario.path))) continue
          runs.push({ name, server, url: `http://127.0.0.1:${port}${scenario.path}`, slices: [], ok: 0, seconds: 0, requests: 0, late: 0 })
        }
        const attempt = async (run: Run, step: () => Promise<void>): Promise<boolean> => {
          try {
            await step()
            return true
          } catch (error) {
            if (error instanceof NoAnswer) {
              process.stderr.write(`  ${round + 1} ${scenario.path.padEnd(13)} ${run.name.padEnd(22)} skipped in this round: ${error.message}\n`)
              return false
            }
            const reason = error instanceof Error ? error.message : String(error)
            failures.set(key(run.name, scenario.path), reason)
            process.stderr.write(`  ${round + 1} ${scenario.path.padEnd(13)} ${run.name.padEnd(22)} failed: ${reason}; skipped from now on\n`)
            return false
          }
        }
        if (settings.warmup > 0) {
          const warmupRate = settings.warmupRate?.(scenario) ?? offered
          const kept: Run[] = []
          for (const run of runs) {
            if (await attempt(run, async () => check(await paced(run.url, settings.warmup, settings.connections, warmupRate, scenario.post), 'warm-up'))) kept.push(run)
          }
          runs = kept
        }
        const sliceSeconds = settings.duration / settings.slices
        for (let slice = 0; slice < settings.slices; slice++) {
          const turn = slice % 2 === 0 ? runs : [...runs].reverse()
          for (const run of turn) {
            if (!await attempt(run, async () => await measureSlice(run, offered, sliceSeconds, settings, scenario.post))) runs = runs.filter((other) => other !== run)
          }
        }
        for (const run of runs) {
          const w = toWindow(run, round, offered)
          if (settings.saturated > 0 && !await attempt(run, async () => {
            w.saturated = await autocannon(run.url, settings.saturated, settings.connections, undefined, scenario.post)
            if (failedShare(w.saturated) > MAX_FAILED) throw new Error(`${w.saturated.failed} requests failed in the saturated run (${w.saturated.failures})`)
          })) continue
          windows.set(key(run.name, scenario.path), [...(windows.get(key(run.name, scenario.path)) ?? []), w])
          log(round, run.name, scenario, w)
        }
      }
    } finally {
      await Promise.all([...servers.values()].map(async (server) => await server.stop()))
    }
  }
  return results
}
