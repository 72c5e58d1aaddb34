// The client of the waiters benchmark: `node --import tsx bench/waiters-client.ts <h1|h2>
// <port[,port…]> [sessions]` (several ports: the polls are spread over those servers evenly). On { open: n, cursor }, it opens n long polls — over HTTP/1.1 one socket
// each, over h2c n streams spread over `sessions` sessions — and says { sent } once all are
// written. It timestamps every answer as it arrives; on { collect: id, waitMs } it waits until
// every poll was answered (or waitMs), checks that each got message `id` exactly once, and
// reports. Times are epoch ms with sub-ms precision, comparable across processes.
import http2 from 'node:http2'
import net from 'node:net'

const protocol = process.argv[2]
const ports = (process.argv[3] ?? '').split(',').map(Number)
const sessionCount = Number(process.argv[4] ?? 100)
const now = (): number => performance.timeOrigin + performance.now()

interface Answer { at: number, status: number, body: string }

let answers: Answer[] = []
let errors = 0
let extra = 0 // bytes or answers after a poll's one answer: duplicates
let expected = 0
let onAnswer: () => void = () => {}
const closers: Array<() => void> = []

function answered (answer: Answer): void {
  answers.push(answer)
  if (answers.length >= expected) onAnswer()
}

function openH1 (path: string, port: number): Promise<void> {
  const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(request)
      resolve()
    })
    closers.push(() => socket.destroy())
    socket.setEncoding('latin1')
    let text = ''
    let done = false
    socket.on('data', (chunk: string) => {
      if (done) { extra++; return }
      text += chunk
      const head = text.indexOf('\r\n\r\n')
      if (head === -1) return
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head))?.[1] ?? -1)
      const body = text.slice(head + 4)
      if (Buffer.byteLength(body, 'latin1') < length) return
      done = true
      answered({ at: now(), status: Number(text.slice(9, 12)), body: Buffer.from(body, 'latin1').toString() })
    })
    socket.on('error', (error) => {
      errors++
      reject(error)
    })
  })
}

async function openH2 (path: string, n: number): Promise<void> {
  const perSession = Math.ceil(n / sessionCount)
  for (let s = 0; s * perSession < n; s++) {
    const session = http2.connect(`http://127.0.0.1:${ports[s % ports.length] as number}`, {
      peerMaxConcurrentStreams: 100_000,
      maxSessionMemory: 4096,
      settings: { maxConcurrentStreams: 100_000 }
    })
    session.on('error', () => { errors++ })
    closers.push(() => session.destroy())
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve())
      session.once('error', reject)
    })
    for (let i = s * perSession; i < Math.min(n, (s + 1) * perSession); i++) {
      const stream = session.request({ ':path': path }, { endStream: true })
      let status = 0
      let body = ''
      let done = false
      stream.setEncoding('utf8')
      stream.on('response', (headers) => { status = Number(headers[':status']) })
      stream.on('data', (chunk: string) => { body += chunk })
      stream.on('end', () => {
        if (done) { extra++; return }
        done = true
        answered({ at: now(), status, body })
      })
      stream.on('error', () => { errors++ })
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function open (n: number, cursor: number): Promise<number> {
  answers = []
  errors = 0
  extra = 0
  expected = n
  const path = `/a/message/updates?cursor=${cursor}`
  const started = now()
  if (protocol === 'h2') {
    await openH2(path, n)
  } else {
    for (let i = 0; i < n; i += 500) {
      const batch: Array<Promise<void>> = []
      for (let j = i; j < Math.min(n, i + 500); j++) batch.push(openH1(path, ports[j % ports.length] as number))
      await Promise.all(batch)
    }
  }
  return now() - started
}

async function collect (id: number, waitMs: number): Promise<Record<string, number>> {
  if (answers.length < expected) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs)
      onAnswer = () => { clearTimeout(timer); resolve() }
    })
  }
  await new Promise((resolve) => setTimeout(resolve, 200)) // anything arriving twice
  let delivered = 0
  let duplicated = extra
  let wrong = 0
  for (const answer of answers) {
    let copies = 0
    try {
      const { messages } = JSON.parse(answer.body) as { messages: Array<{ id: number }> }
      copies = messages.filter((message) => message.id === id).length
      wrong += messages.length - copies
    } catch {
      wrong++
    }
    if (answer.status !== 200) wrong++
    if (copies > 0) delivered++
    duplicated += Math.max(0, copies - 1)
  }
  const times = answers.map((answer) => answer.at).sort((a, b) => a - b)
  for (const close of closers.splice(0)) close()
  return {
    polls: expected,
    answers: answers.length,
    delivered,
    lost: expected - delivered,
    duplicated,
    wrong,
    errors,
    firstAt: times[0] ?? NaN,
    medianAt: times[times.length >> 1] ?? NaN,
    lastAt: times[times.length - 1] ?? NaN
  }
}

process.on('message', (message: { open?: number, cursor?: number, collect?: number, waitMs?: number }) => {
  if (message.open !== undefined) {
    open(message.open, message.cursor ?? 0).then(
      (openMs) => process.send?.({ sent: message.open, openMs, errors }),
      (error: Error) => process.send?.({ error: error.message })
    )
  } else if (message.collect !== undefined) {
    void collect(message.collect, message.waitMs ?? 30_000).then((report) => process.send?.(report))
  }
})
process.on('disconnect', () => process.exit(0))
process.send?.({ ready: true })
