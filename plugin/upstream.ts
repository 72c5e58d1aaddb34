// Upstream requests through undici: `fetch` bound to its reply, the origin allow-list, and
// `pipe` with hop-by-hop filtering and backpressure.
import type { OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { request as undiciRequest } from 'undici'
import { CancelledError, OriginDeniedError, toUpstreamError, UpstreamError } from './errors.js'
import type { AsyncReplyImpl } from './reply.js'
import type { FetchOptions, UpstreamRequest, UpstreamResponse } from './types.js'
import { safeUrl, type InflightRequest } from './watchdog.js'

/**
 * Headers that describe one connection, not the message: never copied from an upstream
 * response to the client (RFC 9110 §7.6.1, plus the legacy `keep-alive`/`proxy-*` ones).
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  // Connection-specific in HTTP/2 too (RFC 9113 §3.2): Node's HTTP/2 response refuses it.
  'http2-settings'
])

const kInflight = Symbol('fastify-async-route.inflight')
type TrackedBody = Readable & { [kInflight]?: Inflight }

function noop (): void {}

/** One upstream request of a reply, from the call until its body was read or released. */
export class Inflight implements InflightRequest {
  readonly method: string
  readonly url: string | URL
  readonly startedAt = Date.now()
  readonly reply: AsyncReplyImpl
  readonly controller = new AbortController()
  body: TrackedBody | null = null
  cancelled = false

  constructor (reply: AsyncReplyImpl, method: string, url: string | URL) {
    this.reply = reply
    this.method = method
    this.url = url
  }

  /** The reply ended: cancel the request, or release its body so the socket is not leaked. */
  release (abnormal: boolean): void {
    const body = this.body
    if (body === null) {
      this.cancelled = true
      this.controller.abort()
    } else if (abnormal) {
      body.destroy()
    } else if (!body.readableEnded) {
      // A body still being piped must stop feeding the response that was just ended
      // (finish() during pipe()): its next chunk would be a write after end, thrown as an
      // uncaught 'error' on the response.
      body.unpipe()
      // Read what is left so the keep-alive socket goes back to the pool.
      const rest = body as unknown as UpstreamResponse['body']
      rest.dump().catch(noop)
    }
  }

  done (): void {
    const inflight = this.reply.inflight
    inflight?.delete(this)
    this.reply.lastActivity = Date.now()
  }
}

function onBodyClose (this: TrackedBody): void {
  this[kInflight]?.done()
}

function originAllowed (allowed: ReadonlySet<string>, url: string | URL): boolean {
  try {
    return allowed.has(new URL(url).origin)
  } catch {
    return false
  }
}

/** `reply.fetch()`: undici's `request` through the plugin's dispatcher, bound to the reply. */
export async function fetchUpstream (reply: AsyncReplyImpl, url: string | URL, options: FetchOptions | undefined): Promise<UpstreamResponse> {
  if (!reply.open) throw new CancelledError({ cause: reply.endReason })
  const plugin = reply.route.plugin
  if (plugin.allowedOrigins !== null && !originAllowed(plugin.allowedOrigins, url)) {
    reply.request.log.warn({ upstream: safeUrl(url) }, 'upstream origin is not in allowedOrigins')
    throw new OriginDeniedError()
  }
  const method = options?.method ?? 'GET'
  const inflight = new Inflight(reply, method, url)
  reply.inflight ??= new Set()
  reply.inflight.add(inflight)
  let response: UpstreamResponse
  try {
    response = await undiciRequest(url, { ...options, method, dispatcher: plugin.dispatcher, signal: inflight.controller.signal } as Parameters<typeof undiciRequest>[1])
  } catch (error) {
    inflight.done()
    if (inflight.cancelled) throw new CancelledError({ cause: reply.endReason })
    throw toUpstreamError(error)
  }
  const body = response.body as TrackedBody
  if (inflight.cancelled) {
    // The reply ended after the head arrived but before this ran: a cancelled fetch never
    // yields a response.
    body.on('error', noop).destroy()
    inflight.done()
    throw new CancelledError({ cause: reply.endReason })
  }
  inflight.body = body
  body[kInflight] = inflight
  body.on('close', onBodyClose)
  // Errors of a body nobody reads must not crash the process; readers still see them.
  body.on('error', noop)
  return response
}

function isResponse (source: unknown): source is UpstreamResponse {
  return typeof (source as UpstreamResponse).statusCode === 'number' && typeof (source as UpstreamResponse).body === 'object'
}

/** The upstream headers that may reach the client. */
function forwardableHeaders (headers: UpstreamResponse['headers']): OutgoingHttpHeaders {
  const connection = headers.connection
  const named = connection === undefined
    ? null
    : new Set(String(connection).split(',').map((name) => name.trim().toLowerCase()))
  const out: OutgoingHttpHeaders = {}
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP.has(name) || named?.has(name) === true) continue
    out[name] = headers[name]
  }
  return out
}

/** `reply.pipe()`: status, headers and body of an upstream response, with backpressure. */
export async function pipeUpstream (reply: AsyncReplyImpl, source: UpstreamResponse | string | URL | UpstreamRequest, options: FetchOptions | undefined): Promise<void> {
  let response: UpstreamResponse
  if (isResponse(source)) {
    response = source
  } else {
    const [url, requestOptions] = typeof source === 'string' || source instanceof URL
      ? [source, options]
      : splitRequest(source)
    try {
      response = await fetchUpstream(reply, url, requestOptions)
    } catch (error) {
      reply.failByPlugin(error)
      return
    }
  }
  return await streamResponse(reply, response)
}

export function splitRequest (request: UpstreamRequest): [string | URL, FetchOptions] {
  const { url, ...options } = request
  return [url, options]
}

function streamResponse (reply: AsyncReplyImpl, response: UpstreamResponse): Promise<void> {
  const body = response.body
  if (!reply.open) {
    body.destroy()
    return Promise.resolve()
  }
  if (body.destroyed || body.readableEnded) {
    // Nothing more will come from this body (its upstream failed before pipe() was called, or
    // it was already read): none of the events below would fire, and the reply would hang.
    reply.failByPlugin(body.errored ?? new Error('reply.pipe(): the upstream response body was already read or destroyed'))
    return Promise.resolve()
  }
  const raw = reply.raw
  if (!raw.headersSent) {
    try {
      reply.writeUpstreamHead(response.statusCode, forwardableHeaders(response.headers))
    } catch (error) {
      // An upstream head Node refuses to relay (a status or header the client's protocol
      // forbids) is a bad upstream response: 502, not a rejected pipe() and a hanging reply.
      // Node's HTTP/2 response keeps what the failed writeHead stored (`:status` included),
      // which would break the error answer's head too: start from a clean head.
      for (const name of raw.getHeaderNames()) raw.removeHeader(name)
      body.destroy()
      reply.failByPlugin(new UpstreamError({ cause: error }))
      return Promise.resolve()
    }
  }
  if (reply.request.method === 'HEAD') {
    body.dump().catch(noop)
    reply.finishPiped()
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    body.on('data', (chunk: Buffer) => { reply.bytesWritten += chunk.length })
    body.once('end', () => reply.finishPiped())
    // An upstream error mid-body cuts the client connection: a clean end would pass a
    // truncated body off as complete.
    body.once('error', (error) => reply.failByPlugin(error))
    body.once('close', resolve)
    body.pipe(raw, { end: false })
  })
}
