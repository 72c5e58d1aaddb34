// A tiny HTTP CONNECT proxy on 127.0.0.1 port 0, for undici's ProxyAgent: every CONNECT to
// 127.0.0.1 becomes a TCP tunnel, and either end closing closes the other, so an upstream sees
// its request's socket close when the dispatcher drops the tunnel.
import http from 'node:http'
import net from 'node:net'

export interface ConnectProxy {
  /** e.g. http://127.0.0.1:1234 */
  url: string
  /** CONNECT requests accepted since start (one per tunnel). */
  connects: () => number
  close: () => Promise<void>
}

export async function startConnectProxy (): Promise<ConnectProxy> {
  const sockets = new Set<net.Socket>()
  let connects = 0
  const server = http.createServer((_req, res) => {
    // Only tunnels: a plain proxied request means the client did not use CONNECT.
    res.statusCode = 405
    res.end('CONNECT only')
  })
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const [host, port] = String(req.url).split(':')
    if (host !== '127.0.0.1' || port === undefined) {
      client.end('HTTP/1.1 403 Forbidden\r\n\r\n')
      return
    }
    connects++
    const target = net.connect(Number(port), host)
    sockets.add(target)
    const teardown = (): void => {
      client.destroy()
      target.destroy()
    }
    target.once('close', () => { sockets.delete(target); teardown() })
    client.once('close', teardown)
    target.on('error', teardown)
    client.on('error', teardown)
    target.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) target.write(head)
      target.pipe(client)
      client.pipe(target)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    connects: () => connects,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
