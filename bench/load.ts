// The load generators, each in its own process on the client core, JSON out: the paced client
// (a steady offered rate, for the CPU-per-request windows) and autocannon (saturated runs).
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { CLIENT_CORE, ROOT, run } from './common.js'

export interface Load {
  /** Seconds autocannon actually ran. */
  seconds: number
  /** Responses with a 2xx status. */
  ok: number
  /** Errors, timeouts and non-2xx answers. */
  failed: number
  /** What the failures were, for the report. */
  failures: string
  /** Requests the paced client wrote more than 5 ms after they were due (not from autocannon). */
  late?: number
  /** Mean completed requests per second. */
  rps: number
  p50: number
  p99: number
}

interface AutocannonResult {
  duration: number
  '2xx': number
  requests: { average: number }
  latency: { p50: number, p99: number }
  errors: number
  timeouts: number
  non2xx: number
}

let bodyDir: string | undefined
const bodyFiles = new Map<number, string>()

/** A file of `bytes` ASCII bytes for autocannon's `-i` (a 1 MiB `-b` would exceed the argv limit). */
function bodyFile (bytes: number): string {
  let file = bodyFiles.get(bytes)
  if (file === undefined) {
    bodyDir ??= mkdtempSync(path.join(os.tmpdir(), 'bench-post-'))
    file = path.join(bodyDir, `${bytes}.bin`)
    writeFileSync(file, Buffer.alloc(bytes, 'x'))
    bodyFiles.set(bytes, file)
  }
  return file
}

/**
 * `seconds` of GETs on `url` (POSTs of a `post`-byte `application/octet-stream` body if
 * given) over `connections` keep-alive connections; at most `rate` requests per second in
 * all (autocannon's `overallRate`), or as many as the server answers.
 */
export async function autocannon (url: string, seconds: number, connections: number, rate?: number, post?: number): Promise<Load> {
  const args = ['-c', String(connections), '-d', String(seconds), '-j']
  if (rate !== undefined) args.push('-R', String(rate))
  if (post !== undefined) args.push('-m', 'POST', '-H', 'content-type=application/octet-stream', '-i', bodyFile(post))
  const out = await run('taskset', ['-c', CLIENT_CORE, process.execPath, `${ROOT}node_modules/autocannon/autocannon.js`, ...args, url])
  const result = JSON.parse(out) as AutocannonResult
  return {
    seconds: result.duration,
    ok: result['2xx'],
    failed: result.errors + result.timeouts + result.non2xx,
    failures: `${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99
  }
}

/**
 * `seconds` of requests at a steady `rate` per second (see paced-client.ts), over at most
 * `connections` keep-alive connections; POSTs of `post` bytes if given.
 */
export async function paced (url: string, seconds: number, connections: number, rate: number, post?: number): Promise<Load> {
  const args = [url, String(seconds), String(connections), String(rate)]
  if (post !== undefined) args.push(String(post))
  const out = await run('taskset', ['-c', CLIENT_CORE, process.execPath, '--import', 'tsx', `${ROOT}bench/paced-client.ts`, ...args])
  return JSON.parse(out) as Load
}
