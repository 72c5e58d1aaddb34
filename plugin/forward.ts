// `reply.forward(url)`: the incoming request sent on to `url` — its method, its headers less
// the hop-by-hop ones, `x-forwarded-*`, its body as parsed or streamed — and the answer relayed
// as `pipe(url)` relays it (the direct path unless the body is a stream).
import type { IncomingHttpHeaders } from 'node:http'
import { Transform, type Readable, type TransformCallback } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { BodyTooLargeError, InvalidArgumentError, mustBe } from './errors.js'
import { HOP_BY_HOP } from './headers.js'
import type { ReplyPort } from './reply-port.js'
import type { ForwardOptions, PipeOptions } from './types.js'
import { callPolicy } from './retry-policy.js'
import { checkRewrite, pipeRequest } from './pipe.js'
import { failLater } from './upstream-call.js'
import { kFailByPlugin, kRetry } from './symbols.js'

/** Request headers never forwarded besides the hop-by-hop ones: undici refuses `expect`, and sends the URL's `host`. */
const DROPPED = new Set(['expect', 'host'])

const FORWARD_OPTIONS = new Set(['headers', 'xForwarded', 'retry', 'rewriteHeaders', 'bodyLimit', 'headersTimeout', 'bodyTimeout'])

export function forwardRequest (reply: ReplyPort, url: string | URL, options: ForwardOptions | undefined): Promise<void> {
  if (options !== undefined) checkOptions(options)
  // A bad `retry` is a programming error: thrown now, whatever the path.
  const policy = callPolicy(reply[kRetry], options?.retry, 'reply.forward()')
  const request = reply.request
  const method = request.method
  const pipeOptions: PipeOptions = { method }
  let streamed = false
  let asJson = false
  if (method !== 'GET' && method !== 'HEAD') {
    const body: unknown = request.body
    if (isReadable(body)) {
      const limit = options?.bodyLimit
      if (limit === undefined) {
        pipeOptions.body = body
      } else if (Number(request.headers['content-length']) > limit) {
        // Refused before anything is sent.
        return failLater(reply, new BodyTooLargeError())
      } else {
        pipeOptions.body = capped(reply, body, limit)
      }
      streamed = true
    } else if (typeof body === 'string' || body instanceof Uint8Array) {
      pipeOptions.body = body
    } else if (body !== undefined) {
      pipeOptions.body = JSON.stringify(body)
      asJson = true
    }
  }
  const headers = forwardedHeaders(request, streamed, options?.xForwarded !== false)
  // A parsed value sent again as JSON says so, unless it came as a JSON type already.
  if (asJson && !isJsonType(headers['content-type'])) headers['content-type'] = 'application/json'
  if (options !== undefined) {
    if (options.headers !== undefined) applyHeaders(headers, options.headers)
    if (options.rewriteHeaders !== undefined) pipeOptions.rewriteHeaders = options.rewriteHeaders
    if (options.headersTimeout !== undefined) pipeOptions.headersTimeout = options.headersTimeout
    if (options.bodyTimeout !== undefined) pipeOptions.bodyTimeout = options.bodyTimeout
  }
  pipeOptions.headers = headers
  return pipeRequest(reply, url, pipeOptions, policy)
}

function checkOptions (options: ForwardOptions): void {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError('reply.forward(): options must be an object')
  }
  for (const key of Object.keys(options)) {
    if (!FORWARD_OPTIONS.has(key)) {
      throw new InvalidArgumentError(`reply.forward(): unknown option "${key}" (takes ${[...FORWARD_OPTIONS].join(', ')})`)
    }
  }
  checkRewrite(options.rewriteHeaders, 'reply.forward()')
  const limit = options.bodyLimit
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 0)) {
    mustBe(InvalidArgumentError, 'reply.forward():', 'bodyLimit', 'an integer from 0 (bytes)', limit)
  }
}

/**
 * `body` passed on while it stays within `limit` bytes; the chunk that would go past it ends the
 * reply with 413 instead (which aborts the upstream request), so the upstream never receives a
 * whole oversized body. (Fastify does not apply a route's `bodyLimit` to a pass-through
 * parser's stream.)
 */
function capped (reply: ReplyPort, body: Readable, limit: number): Readable {
  let received = 0
  const counter = new Transform({
    transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      received += chunk.length
      if (received <= limit) return callback(null, chunk)
      const error = new BodyTooLargeError()
      reply[kFailByPlugin](error)
      callback(error)
    }
  })
  // (Not pipeline(): it would destroy the request, and with it the socket the 413 goes out on.)
  body.on('error', (error) => counter.destroy(error))
  return body.pipe(counter)
}

/** A readable stream: what a pass-through content-type parser leaves as `request.body`. */
function isReadable (body: unknown): body is Readable {
  return body !== null && typeof body === 'object' && typeof (body as { pipe?: unknown }).pipe === 'function' &&
    typeof (body as { on?: unknown }).on === 'function'
}

/** `application/json`, or any `+json` type, with parameters or not. */
function isJsonType (value: string | string[] | undefined): boolean {
  const type = String(value).split(';', 1)[0]?.trim().toLowerCase() as string
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))
}

type Headers = Record<string, string | string[]>

/** The incoming headers less the hop-by-hop ones, those the incoming `connection` names, `expect`, `host`, and `content-length` unless the body is streamed; plus `x-forwarded-*`. */
function forwardedHeaders (request: FastifyRequest, streamed: boolean, xForwarded: boolean): Headers {
  const incoming: IncomingHttpHeaders = request.headers
  const named = connectionNamed(incoming.connection)
  const out: Headers = {}
  for (const name of Object.keys(incoming)) {
    // (HTTP/2 pseudo-headers, `:path` and the like, describe this request, not the message.)
    if (HOP_BY_HOP.has(name) || DROPPED.has(name) || name.charCodeAt(0) === 58 /* : */ || (named !== null && named.has(name))) continue
    if (name === 'content-length' && !streamed) continue
    const value = incoming[name]
    if (value !== undefined) out[name] = value
  }
  if (xForwarded) {
    // The peer of this connection, as nginx's `$proxy_add_x_forwarded_for` appends it: not
    // `request.ip`, which under `trustProxy` is what the client itself claimed. (A Unix socket
    // has no peer address: then nothing is appended.)
    const peer = request.socket.remoteAddress
    const forwardedFor = out['x-forwarded-for']
    if (peer !== undefined) out['x-forwarded-for'] = forwardedFor === undefined ? peer : `${String(forwardedFor)}, ${peer}`
    out['x-forwarded-proto'] = request.protocol
    const host = incoming.host ?? incoming[':authority']
    if (host === undefined) {
      delete out['x-forwarded-host']
    } else {
      out['x-forwarded-host'] = String(host)
    }
    // The RFC 7239 header says what the client claims: dropped with the x-forwarded-* replaced.
    delete out.forwarded
  }
  return out
}

function connectionNamed (connection: string | undefined): Set<string> | null {
  if (connection === undefined) return null
  const named = new Set<string>()
  for (const token of connection.split(',')) named.add(token.trim().toLowerCase())
  return named
}

function applyHeaders (headers: Headers, changes: NonNullable<ForwardOptions['headers']>): void {
  if (changes === null || typeof changes !== 'object') {
    throw new InvalidArgumentError('reply.forward(): options.headers must be an object')
  }
  for (const name of Object.keys(changes)) {
    const lower = name.toLowerCase()
    const value = changes[name]
    if (value === null) {
      delete headers[lower]
    } else {
      headers[lower] = typeof value === 'number' ? String(value) : value as string | string[]
    }
  }
}
