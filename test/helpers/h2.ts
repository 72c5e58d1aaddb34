// Cleartext HTTP/2 (h2c): Fastify options for it and a client that reports how a stream ended.
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import type { Teardown } from './context.js'

/** Fastify over cleartext HTTP/2 (startApp's options are typed for HTTP/1). */
export const H2C = { http2: true } as unknown as FastifyServerOptions

export interface H2Response {
  status: number
  headers: http2.IncomingHttpHeaders
  body: string
  /** The RST_STREAM code, 0 when the stream ended normally. */
  rstCode: number
}

/** An HTTP/2 session to `url`, closed when the test ends; session errors are ignored. */
export function h2session (test: Teardown, url: string): http2.ClientHttp2Session {
  const session = http2.connect(url)
  session.on('error', () => {})
  test.teardown(() => session.close())
  return session
}

/** One GET on `session`; resolves when the stream closes, however it ended; rejects after 5 s. */
export function h2get (session: http2.ClientHttp2Session, path = '/'): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path })
    let headers: http2.IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    const timer = setTimeout(() => reject(new Error(`no HTTP/2 response for ${path} within 5000 ms`)), 5000)
    req.on('response', (h) => { headers = h })
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('error', () => {})
    req.on('close', () => {
      clearTimeout(timer)
      resolve({ status: Number(headers[':status'] ?? 0), headers, body: Buffer.concat(chunks).toString(), rstCode: req.rstCode ?? 0 })
    })
    req.end()
  })
}
