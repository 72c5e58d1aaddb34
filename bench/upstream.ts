// The benchmark's upstream: plain node:http, keep-alive, a ~100-byte JSON answer on /small
// and a 64 KiB one on /large; `POST /echo-size/*` reads the request body and answers a small
// JSON with its length. Reports its port over IPC.
import http from 'node:http'

const small = Buffer.from(JSON.stringify({
  id: 42,
  name: 'fastify-async-route',
  ok: true,
  tags: ['bench', 'upstream'],
  at: '2025-01-01T00:00:00Z'
}))
const large = Buffer.alloc(64 * 1024, 'x')

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url?.startsWith('/echo-size') === true) {
    let length = 0
    req.on('data', (chunk: Buffer) => { length += chunk.length })
    req.on('end', () => {
      const answer = JSON.stringify({ length })
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(answer) })
      res.end(answer)
    })
    return
  }
  const body = req.url === '/large' ? large : small
  res.writeHead(200, {
    'content-type': req.url === '/large' ? 'application/octet-stream' : 'application/json; charset=utf-8',
    'content-length': body.length
  })
  res.end(body)
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as { port: number }).port, small: small.length, large: large.length })
})
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
