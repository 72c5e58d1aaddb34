// The client of the overload comparison: `node --import tsx bench/overload-client.ts <port>
// <connections>`. On each IPC message `{ path, n }` it sends n GET requests to `path` over
// `connections` keep-alive sockets (each socket one request at a time) and answers with the
// wall time and the statuses.
import http from 'node:http'

const port = Number(process.argv[2])
const connections = Number(process.argv[3])
const agent = new http.Agent({ keepAlive: true, maxSockets: connections })

function get (path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject)
  })
}

process.on('message', (message: { path: string, n: number }) => {
  const statuses: Record<string, number> = {}
  let next = 0
  const worker = async (): Promise<void> => {
    while (next++ < message.n) {
      const status = await get(message.path)
      statuses[status] = (statuses[status] ?? 0) + 1
    }
  }
  const start = performance.now()
  Promise.all(Array.from({ length: connections }, worker)).then(() => {
    process.send?.({ ms: Math.round(performance.now() - start), statuses })
  }, (error: unknown) => {
    process.send?.({ error: String(error) })
  })
})
process.on('disconnect', () => process.exit(0))
process.send?.({ ready: true })
