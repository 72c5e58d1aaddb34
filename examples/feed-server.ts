// A small local upstream for the examples: answers with a JSON feed, so that they need no
// internet. Listens on 127.0.0.1 at a port the system picks.
import http from 'node:http'

export interface FeedServer {
  url: string
  close: () => Promise<void>
}

export async function startFeedServer (entries = 3): Promise<FeedServer> {
  const feed = JSON.stringify({
    entries: Array.from({ length: entries }, (_, i) => ({ id: i + 1, title: `Entry ${i + 1}` }))
  })
  const server = http.createServer((_request, response) => {
    response.setHeader('content-type', 'application/json')
    response.end(feed)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}/feed`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}
