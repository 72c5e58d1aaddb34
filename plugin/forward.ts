// `reply.forward(url)`: the incoming request sent on to `url` — its method, its headers less
// the hop-by-hop ones, `x-forwarded-*`, its body as parsed or streamed — and the answer relayed
// as `pipe(url)` relays it (the direct path unless the body is a stream).
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { BadPathError, InvalidArgumentError } from './errors.js'
import { HOP_BY_HOP } from './headers.js'
import { failLater } from './pipe-direct.js'
import type { ReplyPort } from './reply-port.js'
import type { FetchOptions, ForwardOptions } from './types.js'
import { callPolicy } from './retry-policy.js'
import { pipeRequest } from './upstream.js'

/** Request headers never forwarded besides the hop-by-hop ones: undici refuses `expect`, and sends the URL's `host`. */
const DROPPED = new Set(['expect', 'host'])

const FORWARD_OPTIONS = new Set(['headers', 'xForwarded', 'retry', 'headersTimeout', 'bodyTimeout'])

export function forwardRequest (reply: ReplyPort, url: string | URL, options: ForwardOptions | undefined): Promise<void> {
  if (options !== undefined) checkOptions(options)
  // A bad `retry` is a programming error: thrown now, whatever the path.
  const policy = callPolicy(reply.retry, options?.retry, 'reply.forward()')
  if (typeof url === 'string' && hasDotSegment(url)) return failLater(reply, new BadPathError())
  const request = reply.request
  const method = request.method
  const pipeOptions: FetchOptions = { method }
  let streamed = false
  let asJson = false
  if (method !== 'GET' && method !== 'HEAD') {
    const body: unknown = request.body
    if (isReadable(body)) {
      pipeOptions.body = body
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
      throw new InvalidArgumentError(`reply.forward(): unknown option "${key}" (takes headers, xForwarded, retry, headersTimeout, bodyTimeout)`)
    }
  }
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
    const forwardedFor = incoming['x-forwarded-for']
    out['x-forwarded-for'] = forwardedFor === undefined ? request.ip : `${String(forwardedFor)}, ${request.ip}`
    out['x-forwarded-proto'] = request.protocol
    const host = incoming.host ?? incoming[':authority']
    if (host === undefined) {
      delete out['x-forwarded-host']
    } else {
      out['x-forwarded-host'] = String(host)
    }
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

/**
 * A dot segment in the path of `url` (`.` or `..`, also as `%2e`), once `%2f` and `%5c` are
 * read as `/` and `\` as `/`: what a `..` in `request.url` would use to walk a gateway out of
 * the prefix it appended it to. The check reads the string as given, before the URL parser
 * resolves the segments away.
 */
export function hasDotSegment (url: string): boolean {
  let rest = url
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.exec(rest)
  if (scheme !== null) {
    rest = rest.slice(scheme[0].length)
    // The authority, up to the first `/`, `\`, `?` or `#`.
    const authority = /^[/\\]{2}[^/\\?#]*/.exec(rest)
    if (authority !== null) rest = rest.slice(authority[0].length)
  }
  const end = rest.search(/[?#]/)
  const path = (end === -1 ? rest : rest.slice(0, end)).replace(/%2f|%5c|\\/gi, '/')
  for (const segment of path.split('/')) {
    if (segment.length === 0 || segment.length > 6) continue
    const plain = segment.replace(/%2e/gi, '.')
    if (plain === '.' || plain === '..') return true
  }
  return false
}
