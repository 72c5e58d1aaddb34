// An example started as a user starts it (`tsx examples/…`, PORT=0): the process, and the URL
// it printed ("… listening on http://127.0.0.1:PORT/"). Killed when the test ends.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import type { Teardown } from './context.js'

export interface RunningExample {
  child: ChildProcessWithoutNullStreams
  /** `http://127.0.0.1:PORT`, without the trailing slash. */
  address: string
  /** Resolves with the exit code once the process exits. */
  exited: Promise<number | null>
}

/** `env`: more environment variables (`REDIS_URL`, …). */
export async function startExample (test: Teardown, script: string, env: Record<string, string> = {}): Promise<RunningExample> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, PORT: '0', ...env } })
  test.teardown(() => { child.kill('SIGKILL') })
  child.stderr.resume()
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const address = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const found = /listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(out)
      if (found !== null) resolve(found[1] as string)
    })
    child.once('exit', (code) => reject(new Error(`${script} exited early (${String(code)}): ${out}`)))
  })
  return { child, address, exited }
}
