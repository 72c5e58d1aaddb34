// A load generator that offers a steady rate: `node --import tsx bench/paced-client.ts <url>
// <seconds> <connections> <rate> [postBytes]`, one JSON line out (the Load of load.ts).
// autocannon's `-R` is a per-connection quota per second, which its connections spend as fast
// as they can at the start of every second: bursts at full speed, then silence, so "7,000 req/s"
// really measured a saturated server for part of each second. Here the requests due by each
// millisecond are sent in that millisecond, over keep-alive connections (one request at a time
// on each, opened as needed up to the limit, queued beyond it). `late` counts the requests
// written more than LATE_MS after they were due: queued for a free connection, or this
// client's own loop behind (its core also serves the upstream).
// It writes prebuilt request bytes on plain sockets and only finds where each answer ends:
// it shares its core with the upstream, and an HTTP client library would cost that core more
// than the server under test costs its own.
import net from 'node:net'

const [url = '', secondsArg = '3', connectionsArg = '100', rateArg = '1000', postArg] = process.argv.slice(2)
const target = new URL(url)
const seconds = Number(secondsArg)
const maxConnections = Number(connectionsArg)
const rate = Number(rateArg)
const postBytes = postArg === undefined ? 0 : Number(postArg)

const head = postBytes > 0
  ? `POST ${target.pathname}${target.search} HTTP/1.1\r\nhost: ${target.host}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${postBytes}\r\n\r\n`
  : `GET ${target.pathname}${target.search} HTTP/1.1\r\nhost: ${target.host}\r\n\r\n`
const requestBytes = Buffer.concat([Buffer.from(head, 'latin1'), Buffer.alloc(postBytes, 'x')])

let ok = 0
let failed = 0
let errors = 0
let non2xx = 0
let inFlight = 0
let late = 0
const LATE_MS = 5
const latencies: number[] = []
/** Requests waiting for a free connection: when they were queued (latency counts from then) and due. */
const queue: Array<{ at: number, due: number }> = []
const idle: Connection[] = []
let open = 0

const HEAD_END = Buffer.from('\r\n\r\n')
const CHUNKED_END = Buffer.from('0\r\n\r\n')

/** One keep-alive connection: one request at a time, the answer read just far enough to find its end. */
class Connection {
  readonly socket: net.Socket
  sentAt = 0
  busy = false
  buffer: Buffer = Buffer.alloc(0)
  /** Body bytes still to come (content-length), -1 for a chunked body, -2 while the head is incomplete. */
  remaining = -2
  status = 0
  closeAfter = false

  constructor () {
    open++
    this.socket = net.connect(Number(target.port), target.hostname)
    this.socket.setNoDelay(true)
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk))
    this.socket.on('error', () => {})
    this.socket.on('close', () => this.onClose())
  }

  send (sentAt: number, due: number): void {
    if (performance.now() - due > LATE_MS) late++
    this.busy = true
    this.sentAt = sentAt
    this.remaining = -2
    this.buffer = Buffer.alloc(0)
    this.socket.write(requestBytes)
  }

  onData (chunk: Buffer): void {
    if (this.remaining === -2) {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
      const end = this.buffer.indexOf(HEAD_END)
      if (end < 0) return
      const text = this.buffer.toString('latin1', 0, end).toLowerCase()
      this.status = Number(text.slice(9, 12))
      this.closeAfter = text.includes('\r\nconnection: close')
      const length = /\r\ncontent-length: *(\d+)/.exec(text)
      this.remaining = length !== null ? Number(length[1]) : text.includes('\r\ntransfer-encoding: chunked') ? -1 : 0
      chunk = this.buffer.subarray(end + 4)
      this.buffer = Buffer.alloc(0)
    }
    if (this.remaining === -1) {
      // Chunked: the answer ends with the last chunk (the servers here send no trailers).
      this.buffer = Buffer.concat([this.buffer.subarray(-8), chunk])
      if (this.buffer.subarray(-CHUNKED_END.length).equals(CHUNKED_END)) this.done()
      return
    }
    this.remaining -= chunk.length
    if (this.remaining <= 0) this.done()
  }

  done (): void {
    this.busy = false
    inFlight--
    if (this.status >= 200 && this.status < 300) {
      ok++
      latencies.push(performance.now() - this.sentAt)
    } else {
      failed++
      non2xx++
    }
    if (this.closeAfter) {
      this.socket.destroy()
      return
    }
    const next = queue.shift()
    if (next !== undefined) this.send(next.at, next.due)
    else idle.push(this)
  }

  onClose (): void {
    open--
    const at = idle.indexOf(this)
    if (at >= 0) idle.splice(at, 1)
    if (this.busy) {
      this.busy = false
      inFlight--
      failed++
      errors++
    }
    // Whatever waits gets a new connection.
    const next = queue.shift()
    if (next !== undefined) new Connection().send(next.at, next.due)
  }
}

function one (due: number): void {
  inFlight++
  const now = performance.now()
  const connection = idle.pop()
  if (connection !== undefined) connection.send(now, due)
  else if (open < maxConnections) new Connection().send(now, due)
  else queue.push({ at: now, due })
}

const start = performance.now()
const end = start + seconds * 1000
let sent = 0
await new Promise<void>((resolve) => {
  const tick = setInterval(() => {
    const now = Math.min(performance.now(), end)
    const due = Math.floor(((now - start) / 1000) * rate)
    for (; sent < due; sent++) one(start + ((sent + 1) * 1000) / rate)
    if (now >= end) {
      clearInterval(tick)
      resolve()
    }
  }, 1)
})
// The last answers (bounded: a server that stopped answering fails them).
const drainDeadline = performance.now() + 5_000
while (performance.now() < drainDeadline) {
  if (inFlight === 0) break
  await new Promise((resolve) => setTimeout(resolve, 5))
}
const elapsed = (performance.now() - start) / 1000
const unanswered = inFlight
failed += unanswered
for (const connection of idle) connection.socket.destroy()

latencies.sort((a, b) => a - b)
const at = (q: number): number => latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number)
process.stdout.write(JSON.stringify({
  seconds: elapsed,
  ok,
  failed,
  failures: `${non2xx} non-2xx, ${errors} errors, ${unanswered} unanswered`,
  late,
  rps: ok / elapsed,
  p50: at(0.5),
  p99: at(0.99)
}) + '\n')
process.exit(0)
