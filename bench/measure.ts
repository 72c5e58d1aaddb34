// The measuring loop. Every round starts one fresh server process per target (all pinned to
// the server core, idle until their turn), then, body by body, runs each target in turn —
// the order reversed every other round — through: a warm-up at the offered rate, the measured
// window at the offered rate (the server's CPU time around it, over IPC), and optionally a
// short saturated run. A target whose server does not start, or whose requests fail, is
// marked failed and skipped from then on instead of stopping the benchmark.
import path from 'node:path'
import { ROOT, SERVER_CORE, startChild, type Child } from './common.js'
import { autocannon, paced, type Load } from './load.js'
import { variant, type Scenario } from './targets.js'

export interface Settings {
  rounds: number
  /** Seconds of the measured window, and of the warm-up before it. */
  duration: number
  warmup: number
  /** Seconds of the saturated run after each window; 0 for none. */
  saturated: number
  connections: number
  /** Offered requests per second, per body. */
  rate: (scenario: Scenario) => number
  /** The Node binary for the servers. */
  node: string
  /** A copy of plugin/ for the `@base` variants. */
  baseline?: string
  /** The variants to run, in scenario order (`pipe-url`, `pipe-url@base`, …). */
  names: readonly string[]
  scenarios: readonly Scenario[]
}

export interface Window {
  round: number
  /** Server CPU time (user + system) per 2xx response, µs. */
  cpu: number
  offered: number
  /** 2xx responses per second over the window. */
  achieved: number
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
  return startChild(SERVER_CORE, 'bench/servers.ts', [target, upstream], { env, node: settings.node })
}

async function cpuTime (server: Child): Promise<number> {
  const { user, system } = await server.ask('cpu') as Cpu
  return user + system
}

/** A window that got no answers at all: skipped in this round, tried again in the next. */
class NoAnswer extends Error {}

/** One target on one body: warm-up, measured window, saturated run. Throws if requests fail. */
async function measureWindow (server: Child, url: string, round: number, offered: number, settings: Settings, post?: number): Promise<Window> {
  const warm = await paced(url, settings.warmup, settings.connections, offered, post)
  if (warm.ok + warm.failed === 0) throw new NoAnswer('no answer at all during the warm-up (machine overloaded?)')
  if (warm.ok === 0 || failedShare(warm) > MAX_FAILED) throw new Error(`${warm.failed} of ${warm.ok + warm.failed} requests failed in the warm-up (${warm.failures})`)
  const before = await cpuTime(server)
  const load = await paced(url, settings.duration, settings.connections, offered, post)
  const after = await cpuTime(server)
  if (load.ok === 0 || failedShare(load) > MAX_FAILED) throw new Error(`${load.failed} of ${load.ok + load.failed} requests failed (${load.failures})`)
  const window: Window = { round, cpu: (after - before) / load.ok, offered, achieved: load.ok / load.seconds }
  if (settings.saturated > 0) {
    window.saturated = await autocannon(url, settings.saturated, settings.connections, undefined, post)
    if (failedShare(window.saturated) > MAX_FAILED) throw new Error(`${window.saturated.failed} requests failed in the saturated run (${window.saturated.failures})`)
  }
  return window
}

function log (round: number, name: string, scenario: Scenario, w: Window): void {
  const saturated = w.saturated === undefined ? '' : `  | saturated ${Math.round(w.saturated.rps)} req/s, p99 ${w.saturated.p99} ms`
  const flag = w.achieved < 0.97 * w.offered ? '  (below the offered rate)' : ''
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
        for (const name of order) {
          const port = ports.get(name)
          const server = servers.get(name)
          if (port === undefined || server === undefined || failures.has(key(name, scenario.path))) continue
          const offered = settings.rate(scenario)
          try {
            const w = await measureWindow(server, `http://127.0.0.1:${port}${scenario.path}`, round, offered, settings, scenario.post)
            windows.set(key(name, scenario.path), [...(windows.get(key(name, scenario.path)) ?? []), w])
            log(round, name, scenario, w)
          } catch (error) {
            if (error instanceof NoAnswer) {
              process.stderr.write(`  ${round + 1} ${scenario.path.padEnd(13)} ${name.padEnd(22)} skipped in this round: ${error.message}\n`)
              continue
            }
            const reason = error instanceof Error ? error.message : String(error)
            failures.set(key(name, scenario.path), reason)
            process.stderr.write(`  ${round + 1} ${scenario.path.padEnd(13)} ${name.padEnd(22)} failed: ${reason}; skipped from now on\n`)
          }
        }
      }
    } finally {
      await Promise.all([...servers.values()].map(async (server) => await server.stop()))
    }
  }
  return results
}
