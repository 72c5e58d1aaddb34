// A node:http client that tells a complete response from a cut one, for the things
// app.inject cannot show: hangs, truncation, aborts, keep-alive.
import http, { type IncomingHttpHeaders } from 'node:http'
import net from 'node:net'

export interface ClientResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  body: string
  /** The body arrived whole: the response ended cleanly. */
  complete: boolean
}

export interface ClientOptions {
  method?: string
  headers?: Record<string, string>
  body?: string
  agent?: http.Agent | false
  /** Fails the request when nothing completes in this many ms (a hang). */
  timeout?: number
}

/**
 * Reads a response until its connection closes, then hands over its bytes and whether it ended
 * whole (`complete` false: it was cut).
 */
export function readResponse (res: http.IncomingMessage, done: (body: Buffer, complete: boolean) => void): void {
  const chunks: Buffer[] = []
  let ended = false
  res.on('data', (chunk: Buffer) => chunks.push(chunk))
  res.on('end', () => { ended = true })
  res.on('error', () => {})
  res.on('close', () => { done(Buffer.concat(chunks), ended && res.complete) })
}

/**
 * Resolves with the response once it ends or is cut (`complete: false`); rejects when no
 * response head arrived at all, with the socket error, or on `timeout`.
 */
export function request (url: string, options: ClientOptions = {}): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: options.method ?? 'GET',
      headers: options.headers,
      agent: options.agent ?? false
    }, (res) => {
      readResponse(res, (body, complete) => {
        clearTimeout(timer)
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: body.toString(), complete })
      })
    })
    const timer = setTimeout(() => {
      req.destroy(new Error(`no complete response within ${options.timeout ?? 5000} ms`))
    }, options.timeout ?? 5000)
    req.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    req.end(options.body)
  })
}

/** Sends a request and resolves when its response head arrived, leaving the body unread. */
export function openRequest (url: string, options: ClientOptions = {}): Promise<{ req: http.ClientRequest, res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: options.agent ?? false }, (res) => resolve({ req, res }))
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Starts a request and resolves once it has been written, without waiting for any answer. */
export function sendOnly (url: string, options: ClientOptions = {}): Promise<http.ClientRequest> {
  return new Promise((resolve) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: options.agent ?? false })
    req.on('error', () => {})
    req.end(options.body, () => resolve(req))
  })
}

export interface RawAnswer {
  /** Every byte the server sent, as latin1. */
  text: string
  /** The server closed the connection within the wait. */
  closed: boolean
}

/**
 * A raw TCP client, for what node:http would refuse to send or would hide: opens a connection
 * to `url`'s port, lets `send` write what it likes once connected, and reads until the server
 * closes the connection or `ms` have passed.
 */
export function rawExchange (url: string, send: (socket: net.Socket) => void, ms = 3000): Promise<RawAnswer> {
  const { port } = new URL(url)
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), '127.0.0.1')
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ text, closed })
    }
    const timer = setTimeout(() => finish(false), ms)
    socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => finish(true))
    socket.once('connect', () => send(socket))
  })
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` every 10 ms until it is true, failing after `ms`. */
export async function waitFor (check: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(10)
  }
}
