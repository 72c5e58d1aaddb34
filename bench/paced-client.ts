// A load generator that offers a steady rate: `node --import tsx bench/paced-client.ts <url>
// <seconds> <connections> <rate> [postBytes]`, one JSON line out (the Load of load.ts).
// autocannon's `-R` is a per-connection quota per second, which its connections spend as fast
// as they can at the start of every second: bursts at full speed, then silence, so "7,000 req/s"
// really measured a saturated server for part of each second. Here the requests due by each
// millisecond are sent in that millisecond, over a keep-alive pool, whatever came back.
import { Pool } from 'undici'

const [url = '', secondsArg = '3', connectionsArg = '100', rateArg = '1000', postArg] = process.argv.slice(2)
const target = new URL(url)
const seconds = Number(secondsArg)
const rate = Number(rateArg)
const postBytes = postArg === undefined ? 0 : Number(postArg)
const body = postBytes > 0 ? Buffer.alloc(postBytes, 'x') : undefined
const options = {
  path: target.pathname + target.search,
  method: body === undefined ? 'GET' : 'POST',
  headers: body === undefined ? undefined : { 'content-type': 'application/octet-stream' },
  body
} as const

const pool = new Pool(target.origin, { connections: Number(connectionsArg), pipelining: 1 })
let ok = 0
let failed = 0
let errors = 0
let non2xx = 0
let inFlight = 0
const latencies: number[] = []

async function one (): Promise<void> {
  const started = performance.now()
  inFlight++
  try {
    const res = await pool.request(options)
    await res.body.dump({ limit: Infinity })
    if (res.statusCode >= 200 && res.statusCode < 300) {
      ok++
      latencies.push(performance.now() - started)
    } else {
      failed++
      non2xx++
    }
  } catch {
    failed++
    errors++
  } finally {
    inFlight--
  }
}

const start = performance.now()
const end = start + seconds * 1000
let sent = 0
await new Promise<void>((resolve) => {
  const tick = setInterval(() => {
    const now = Math.min(performance.now(), end)
    const due = Math.floor(((now - start) / 1000) * rate)
    for (; sent < due; sent++) void one()
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
failed += inFlight
await pool.destroy()

latencies.sort((a, b) => a - b)
const at = (q: number): number => latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number)
process.stdout.write(JSON.stringify({
  seconds: elapsed,
  ok,
  failed,
  failures: `${non2xx} non-2xx, ${errors} errors, ${inFlight} unanswered`,
  rps: ok / elapsed,
  p50: at(0.5),
  p99: at(0.99)
}) + '\n')
