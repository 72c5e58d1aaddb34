// The soak's upstream: one real server on 127.0.0.1 whose paths misbehave on purpose, plus a
// port where nothing listens. Every good body ends with the SHA-256 of what precedes it, so a
// client can tell a whole body from a corrupted or truncated one.
//
// The server runs in a process of its own, as a real upstream does. In the soak's thread it
// accepted its connections late: since libuv 1.45 (Node 20 and later) a listening socket
// accepts one connection per turn of the event loop, and the soak's thread, whose turns are
// long with 200 clients and the gateway in it, fell behind the gateway's new upstream
// connections (about 180 a second: the kinds that reset, cut or abandon one). The accept queue
// stood at about 130; a new connection waited there 0.5 to 2 s, which the client saw as an
// upstream slow to answer, and three tries of a retried request ran past their watchdog.
import { fork } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { listenCounting, refusedOrigin } from '../helpers/upstream.js'

export const BODY_SIZES = [100, 4 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024]
/** How long `/slow` waits before answering: longer than the soak's short watchdog. */
export const SLOW_MS = 600
const CHECKSUM_LENGTH = 64

/** True when the body is whole: its last 64 characters are the SHA-256 of the rest. */
export function verifyBody (body: Buffer, expectedSize: number): boolean {
  if (body.length !== expectedSize + CHECKSUM_LENGTH) return false
  const payload = body.subarray(0, expectedSize)
  const checksum = body.subarray(expectedSize).toString()
  return createHash('sha256').update(payload).digest('hex') === checksum
}

/** One checksummed body per size in BODY_SIZES. */
export function makeBodies (): Map<number, Buffer> {
  const pool = randomBytes(Math.max(...BODY_SIZES))
  const bodies = new Map<number, Buffer>()
  for (const size of BODY_SIZES) {
    const payload = pool.subarray(0, size)
    bodies.set(size, Buffer.concat([payload, Buffer.from(createHash('sha256').update(payload).digest('hex'))]))
  }
  return bodies
}

export interface SoakUpstream {
  origin: string
  /** A port where nothing listens. */
  refusedOrigin: string
  /** Connections the upstream accepted since it started. */
  connections: () => number
  /** Its connections open now. */
  openSockets: () => number
  /** Stops its process (and with it the server and its connections). */
  close: () => Promise<void>
}

/** What the upstream's process tells the soak: where it listens, then its connection counts. */
export type UpstreamMessage = { origin: string } | { accepted: number, open: number }

/** Starts the upstream in a child process; resolves once it listens. */
export async function startSoakUpstream (): Promise<SoakUpstream> {
  // Its own `--import tsx`, whatever runs the soak (npm run soak, or tap with its own loader).
  const child = fork(fileURLToPath(new URL('./upstream-process.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'] })
  let accepted = 0
  let open = 0
  const origin = await new Promise<string>((resolve, reject) => {
    child.on('message', (message: UpstreamMessage) => {
      if ('origin' in message) return resolve(message.origin)
      accepted = message.accepted
      open = message.open
    })
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`the soak upstream's process exited (${String(code)}) before it listened`)))
  })
  return {
    origin,
    refusedOrigin: await refusedOrigin(),
    connections: () => accepted,
    openSockets: () => open,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill()
      await exited
    }
  }
}

/**
 * Runs in the upstream's process: listens on 127.0.0.1 at a free port, returns its origin,
 * and reports its connection counts to `report` whenever they change.
 */
export async function serveSoakUpstream (report: (accepted: number, open: number) => void): Promise<string> {
  const bodies = makeBodies()
  /** `/flaky`: tries seen per request id; the first answers 503, the second is a reset. */
  const flaky = new Map<string, number>()
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream')
    switch (url.pathname) {
      case '/ok': {
        const body = bodies.get(Number(url.searchParams.get('size'))) as Buffer
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length })
        res.end(body)
        return
      }
      case '/echo': {
        // A forwarded POST: the body must arrive whole (its checksum holds), and goes back as it came.
        const chunks: Buffer[] = []
        req.on('data', (chunk: Buffer) => chunks.push(chunk))
        req.on('end', () => {
          const body = Buffer.concat(chunks)
          const size = Number(url.searchParams.get('size'))
          if (req.method !== 'POST' || !verifyBody(body, size)) {
            res.writeHead(422, { 'content-type': 'text/plain' }).end(`bad forwarded body (${body.length} bytes)`)
            return
          }
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body)
        })
        return
      }
      case '/flaky': {
        const id = String(url.searchParams.get('id'))
        const tries = flaky.get(id) ?? 0
        if (tries === 0) {
          flaky.set(id, 1)
          res.writeHead(503, { 'content-type': 'text/plain' }).end('busy')
          return
        }
        if (tries === 1) {
          flaky.set(id, 2)
          res.socket?.destroy()
          return
        }
        flaky.delete(id)
        const body = bodies.get(Number(url.searchParams.get('size'))) as Buffer
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length })
        res.end(body)
        return
      }
      case '/slow': {
        const timer = setTimeout(() => res.end('too late'), SLOW_MS)
        res.once('close', () => clearTimeout(timer))
        return
      }
      case '/stall':
        // Never answers; the socket is freed when the plugin gives up on it.
        return
      case '/reset':
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 100_000 })
        res.write(Buffer.alloc(10_000, 1), () => res.socket?.destroy())
        return
      default:
        res.writeHead(404).end()
    }
  })
  server.keepAliveTimeout = 5_000
  const listening = await listenCounting(server)
  // Added after listenCounting's own listeners, so these run once it has counted.
  const counts = (): void => { report(listening.connections(), listening.openSockets()) }
  server.on('connection', (socket) => {
    counts()
    socket.once('close', counts)
  })
  return listening.origin
}
