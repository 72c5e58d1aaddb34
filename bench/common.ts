// Helpers shared by the benchmark scripts: child processes pinned to a core, IPC, statistics.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))
/** The server under test runs here… */
export const SERVER_CORE = '0'
/** …and the load generator and the upstream here, so the server is the bottleneck. */
export const CLIENT_CORE = '1'

export interface Child {
  proc: ChildProcess
  /** The first IPC message the child sent (its port, usually). */
  ready: Promise<any>
  /** The next IPC message not yet taken (the first one is `ready`'s). */
  next: () => Promise<any>
  /** Sends a message and waits for the next answer. */
  ask: (message: unknown) => Promise<any>
  stop: () => Promise<void>
}

export interface ChildOptions {
  nodeFlags?: string[]
  env?: NodeJS.ProcessEnv
  /** The Node binary (default: the one running the benchmark). */
  node?: string
  /** A command Node runs under, with its arguments (`valgrind --tool=callgrind …`): same pid. */
  wrapper?: string[]
}

/** Runs `node [flags] --import tsx <script> [args]` pinned to `core` with `taskset`, with IPC. */
export function startChild (core: string, script: string, args: string[], { nodeFlags = [], env = process.env, node = process.execPath, wrapper = [] }: ChildOptions = {}): Child {
  const proc = spawn('taskset', ['-c', core, ...wrapper, node, ...nodeFlags, '--import', 'tsx', script, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const queue: unknown[] = []
  const waiting: Array<{ resolve: (message: unknown) => void, reject: (error: Error) => void }> = []
  const exited = (): Error => new Error(`${script} ${args.join(' ')} exited with ${String(proc.exitCode ?? proc.signalCode)}`)
  proc.on('message', (message) => {
    const waiter = waiting.shift()
    if (waiter === undefined) queue.push(message)
    else waiter.resolve(message)
  })
  proc.once('exit', () => {
    for (const waiter of waiting.splice(0)) waiter.reject(exited())
  })
  const next = async (): Promise<any> => {
    if (queue.length > 0) return queue.shift()
    if (proc.exitCode !== null || proc.signalCode !== null) throw exited()
    return await new Promise((resolve, reject) => waiting.push({ resolve, reject }))
  }
  const ready = next()
  ready.catch(() => {})
  return {
    proc,
    ready,
    next,
    ask: async (message) => {
      const answer = next()
      proc.send(message as any)
      return await answer
    },
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const exited = once(proc, 'exit')
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** Runs a command to completion and returns its stdout. */
export async function run (command: string, args: string[]): Promise<string> {
  const proc = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.setEncoding('utf8')
  proc.stdout.on('data', (chunk: string) => { out += chunk })
  const [code] = await once(proc, 'exit')
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${String(code)}`)
  return out
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] as number : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/** Geometric mean (of ratios). */
export function geomean (values: number[]): number {
  return Math.exp(values.reduce((sum, v) => sum + Math.log(v), 0) / values.length)
}

export function version (name: string): string {
  const file = name === '.' ? `${ROOT}package.json` : `${ROOT}node_modules/${name}/package.json`
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
}

export function machine (): string {
  const cpus = os.cpus()
  return `${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}`
}

/** The versions in play; `serverNode` is the version of the Node running the servers under test. */
export function versions (serverNode: string): string {
  return [
    `Node ${serverNode} (servers${serverNode === process.version ? '' : `; ${process.version} for the upstream and the load clients`})`,
    `fastify ${version('fastify')}`,
    `undici ${version('undici')}`,
    `undici 8 ${version('undici8')}`,
    `@fastify/reply-from ${version('@fastify/reply-from')}`,
    `autocannon ${version('autocannon')}`,
    `fastify-async-route ${version('.')} (working tree)`
  ].join(', ')
}

export function flag (argv: string[], name: string): boolean {
  return argv.includes(`--${name}`)
}

/** `--name=N`: a positive number (or 0 if `zero`), or `fallback` without the option. */
export function option (argv: string[], name: string, fallback: number, zero = false): number {
  const prefix = `--${name}=`
  const found = argv.find((arg) => arg.startsWith(prefix))
  if (found === undefined) return fallback
  const value = Number(found.slice(prefix.length))
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !zero)) throw new Error(`--${name} takes a positive number${zero ? ' or 0' : ''}`)
  return value
}

/** `--name=1,2,3`: positive numbers, or `fallback` without the option. */
export function numbersOption (argv: string[], name: string, fallback: number[]): number[] {
  const text = stringOption(argv, name)
  if (text === undefined) return fallback
  const values = text.split(',').map(Number)
  if (values.length === 0 || values.some((value) => !Number.isFinite(value) || value <= 0)) throw new Error(`--${name} takes positive numbers separated by commas`)
  return values
}

export function stringOption (argv: string[], name: string): string | undefined {
  const prefix = `--${name}=`
  return argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length)
}

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** What the no-upstream targets answer. */
export const JSON_BODY = { hello: 'world', id: 42, tags: ['a', 'b'], ok: true }
