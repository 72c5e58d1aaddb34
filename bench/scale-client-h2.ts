// The HTTP/2 client of the scale benchmark: `node --import tsx bench/scale-client-h2.ts <port>
// <n> <timeoutMs> [header]`. Opens n streams over cleartext HTTP/2 (h2c), 1,000 per session, one
// GET /hold each, tells the parent when all are sent, then waits for every answer and reports
// as scale-client.ts does (statuses, how late each came after its send time + timeout).
// One process holds 100,000 of them with 100 sockets: far below the file descriptor limit
// that stops HTTP/1 near 19,000.
import http2 from 'node:http2'
import { summariseAnswers, type HeldRequest } from './scale-answers.js'

const port = Number(process.argv[2])
const n = Number(process.argv[3])
const timeout = Number(process.argv[4])
const header = process.argv[5]
const PER_SESSION = 1000
const extraHeaders: Record<string, string> = {}
if (header !== undefined) {
  const colon = header.indexOf(':')
  extraHeaders[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim()
}

const held: HeldRequest[] = []
const sessions: http2.ClientHttp2Session[] = []
let answered = 0
let finish: () => void = () => {}
const allAnswered = new Promise<void>((resolve) => { finish = resolve })

function settle (entry: HeldRequest, status: string): void {
  if (entry.arrivedAt !== 0) return
  entry.arrivedAt = performance.now()
  entry.status = status
  if (++answered === n) finish()
}

const start = performance.now()
for (let first = 0; first < n; first += PER_SESSION) {
  const session = http2.connect(`http://127.0.0.1:${port}`, {
    peerMaxConcurrentStreams: 100_000,
    maxSessionMemory: 4096,
    settings: { maxConcurrentStreams: 100_000 }
  })
  session.on('error', () => {})
  sessions.push(session)
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve())
    session.once('error', reject)
  })
  for (let i = first; i < Math.min(n, first + PER_SESSION); i++) {
    const entry: HeldRequest = { sentAt: performance.now(), arrivedAt: 0, status: '' }
    held.push(entry)
    const stream = session.request({ ':path': '/hold', ...extraHeaders }, { endStream: true })
    stream.on('response', (headers) => settle(entry, String(headers[':status'])))
    stream.on('error', () => settle(entry, 'error'))
    stream.resume()
  }
  // Let the session send its streams before the next one opens.
  await new Promise((resolve) => setImmediate(resolve))
}
process.send?.({ sent: n, openMs: Math.round(performance.now() - start) })

const deadline = setTimeout(finish, timeout + 30_000)
await allAnswered
clearTimeout(deadline)
for (const session of sessions) session.destroy()
process.send?.(summariseAnswers(held, timeout), () => process.exit(0))
