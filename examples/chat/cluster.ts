// `npm run chat:cluster`: the chat in several processes on one port, one room shared through
// Redis (`REDIS_URL`, redis://127.0.0.1:6379 by default). node:cluster hands each new
// connection to one of the workers in turn, so a page's next poll may be served by another
// process than its last: its cursor is valid there too. `CHAT_WORKERS` sets how many (default:
// one per core); `PORT` as for `npm run chat`.
import cluster from 'node:cluster'
import os from 'node:os'

if (cluster.isPrimary) {
  const workers = Number(process.env.CHAT_WORKERS ?? os.availableParallelism())
  process.env.REDIS_URL ||= 'redis://127.0.0.1:6379'
  let stopping = false
  let listening = 0
  cluster.setupPrimary({ stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  const fork = (): void => {
    const worker = cluster.fork()
    // Each worker prints its "listening on" line: pass on the first only.
    worker.process.stdout?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (line === '') continue
        if (!line.startsWith('chat listening on ')) process.stdout.write(`${line}\n`)
        else if (++listening === workers) console.log(line.replace(/\)$/, `, ${workers} processes)`))
      }
    })
  }
  for (let n = 0; n < workers; n++) fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0)
      return
    }
    console.error(`chat worker ${worker.process.pid ?? '?'} exited (${signal ?? code}); starting another`)
    listening--
    fork()
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      stopping = true
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    })
  }
} else {
  await import('./main.js')
}
