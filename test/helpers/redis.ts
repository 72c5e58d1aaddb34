// A real redis-server for the tests (and the cluster benchmark), on a free port, persistence
// off: `redis-server --port N --save '' --appendonly no`. Nothing is installed here: .ci/run
// installs Debian's redis-server when it is missing; without it the tests that need it are
// skipped with the reason.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import type { Teardown } from './context.js'

export const REDIS_SERVER = 'redis-server'

/** Why redis-server cannot run here, or undefined when it can. */
export function redisMissing (): string | undefined {
  const found = spawnSync(REDIS_SERVER, ['--version'], { stdio: 'ignore' })
  return found.status === 0 ? undefined : `${REDIS_SERVER} is not installed (apt-get install redis-server; .ci/run does)`
}

export interface RunningRedis {
  port: number
  url: string
  /** The server's process id (its CPU time is in /proc/<pid>/stat). */
  readonly pid: number
  /** Kills the server at once (SIGKILL: no goodbye to its clients). */
  kill: () => Promise<void>
  /** Starts it again on the same port, empty. */
  restart: () => Promise<void>
}

async function freePort (): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Starts redis-server on `port`; resolves once it accepts connections. */
async function launch (port: number, extra: string[]): Promise<ChildProcess> {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server on ${port} not ready within 10 s: ${out}`)), 10_000)
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes('Ready to accept connections')) { clearTimeout(timer); resolve() }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server on ${port} exited (${String(code)}): ${out}`)) })
  })
  child.stderr?.resume()
  try {
    await ready
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
  child.stdout?.resume()
  return child
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

/** A redis-server of this test's own, stopped when the test ends. `extra`: more arguments. */
export async function startRedis (test: Teardown, extra: string[] = []): Promise<RunningRedis> {
  let port = 0
  let child: ChildProcess | undefined
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort()
    try {
      child = await launch(port, extra)
    } catch (error) {
      if (attempt === 3) throw error // the port was taken meanwhile: another one
    }
  }
  test.teardown(async () => { if (child !== undefined) await stop(child) })
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid () { return child?.pid ?? 0 },
    kill: async () => { if (child !== undefined) await stop(child) },
    restart: async () => {
      if (child !== undefined) await stop(child)
      child = await launch(port, extra)
    }
  }
}
