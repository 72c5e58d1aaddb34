// The client of the scale benchmark: `node --import tsx bench/scale-client.ts <port> <n>
// <timeoutMs> [header]`. Opens n sockets (in batches), sends one GET /hold on each, tells the parent
// when all are sent (with `header`, e.g. `x-request-timeout-ms: 60000`, on each), then waits for every answer and reports the statuses and how late each
// came after its own send time + timeout. Bounded: gives up timeout + 15 s after the last send.
import net from 'node:net'
import { summariseAnswers, type HeldRequest } from './scale-answers.js'

const port = Number(process.argv[2])
const n = Number(process.argv[3])
const timeout = Number(process.argv[4])
const BATCH = 500
const header = process.argv[5]
const REQUEST = `GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\n${header === undefined ? '' : `${header}\r\n`}\r\n`

interface Held extends HeldRequest { socket: net.Socket }

const held: Held[] = []
let answered = 0
let finish: () => void = () => {}
const allAnswered = new Promise<void>((resolve) => { finish = resolve })

function open (): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      const entry: Held = { socket, sentAt: 0, arrivedAt: 0, status: '' }
      held.push(entry)
      socket.setEncoding('latin1')
      socket.once('data', (chunk: string) => {
        entry.arrivedAt = performance.now()
        entry.status = chunk.slice(9, 12)
        socket.destroy()
        if (++answered === n) finish()
      })
      socket.on('error', () => {})
      socket.write(REQUEST)
      entry.sentAt = performance.now()
      resolve()
    })
    socket.once('error', reject)
  })
}

const start = performance.now()
for (let i = 0; i < n; i += BATCH) {
  const batch: Array<Promise<void>> = []
  for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push(open())
  await Promise.all(batch)
}
process.send?.({ sent: n, openMs: Math.round(performance.now() - start) })

const deadline = setTimeout(finish, timeout + 15_000)
await allAnswered
clearTimeout(deadline)
for (const entry of held) entry.socket.destroy()
process.send?.(summariseAnswers(held, timeout), () => process.exit(0))
