// A real upstream HTTP server on 127.0.0.1, port 0, that counts its connections so tests can
// prove a request never connected, or that no socket was leaked.
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Teardown } from './context.js'

export interface Upstream extends Listening {
  url: string
  server: http.Server
  requests: IncomingMessage[]
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface Listening {
  origin: string
  /** Connections accepted since start. */
  connections: () => number
  /** Connections still open now. */
  openSockets: () => number
  /** Destroys the open connections and closes the server. */
  close: () => Promise<void>
}

/** Listens on 127.0.0.1 at a free port, counting the connections the server accepts. */
export async function listenCounting (server: http.Server): Promise<Listening> {
  const sockets = new Set<Socket>()
  let accepted = 0
  server.on('connection', (socket) => {
    accepted++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    origin: `http://127.0.0.1:${port}`,
    connections: () => accepted,
    openSockets: () => sockets.size,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

export async function startUpstream (handler: UpstreamHandler = (req, res) => res.end('ok')): Promise<Upstream> {
  const requests: IncomingMessage[] = []
  const server = http.createServer((req, res) => {
    requests.push(req)
    handler(req, res)
  })
  const listening = await listenCounting(server)
  return { ...listening, url: `${listening.origin}/`, server, requests }
}

/**
 * A port where nothing listens: connections are refused. On 127.0.0.2, because every server of
 * the tests (apps, upstreams, Redis) listens on 127.0.0.1 port 0 and could be handed a port
 * just freed on 127.0.0.1 — the app under test once was, and answered its own `upstream`.
 */
export async function refusedOrigin (): Promise<string> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, REFUSING_HOST, resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return `http://${REFUSING_HOST}:${port}`
}

const REFUSING_HOST = '127.0.0.2'

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
