// A real upstream HTTP server on 127.0.0.1, port 0, that counts its connections so tests can
// prove a request never connected, or that no socket was leaked.
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Teardown } from './context.js'

export interface Upstream {
  url: string
  origin: string
  server: http.Server
  /** Connections accepted since start. */
  connections: () => number
  /** Connections still open now. */
  openSockets: () => number
  requests: IncomingMessage[]
  close: () => Promise<void>
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse) => void

export async function startUpstream (handler: UpstreamHandler = (req, res) => res.end('ok')): Promise<Upstream> {
  const sockets = new Set<Socket>()
  let accepted = 0
  const requests: IncomingMessage[] = []
  const server = http.createServer((req, res) => {
    requests.push(req)
    handler(req, res)
  })
  server.on('connection', (socket) => {
    accepted++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  const origin = `http://127.0.0.1:${port}`
  return {
    url: `${origin}/`,
    origin,
    server,
    connections: () => accepted,
    openSockets: () => sockets.size,
    requests,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** A port on 127.0.0.1 where nothing listens: connections are refused. */
export async function refusedOrigin (): Promise<string> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return `http://127.0.0.1:${port}`
}

/** An upstream closed when the test ends. */
export async function upstreamFor (test: Teardown, handler?: UpstreamHandler): Promise<Upstream> {
  const upstream = await startUpstream(handler)
  test.teardown(() => upstream.close())
  return upstream
}

/** Reads a request body on the upstream side. */
export function readBody (req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => resolve(Buffer.concat(chunks).toString()))
  })
}

/**
 * An upstream that answers with what it received, as JSON ({ method, url, headers, body }),
 * with `x-upstream: echo` and this status.
 */
export function echo (status = 200): UpstreamHandler {
  return (req, res) => {
    void readBody(req).then((body) => {
      res.setHeader('content-type', 'application/json')
      res.setHeader('x-upstream', 'echo')
      res.statusCode = status
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }))
    })
  }
}

/** Resolves when the upstream's side of this request's connection has closed. */
export function socketClosed (req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    if (req.socket.destroyed) return resolve()
    req.socket.once('close', () => resolve())
  })
}
