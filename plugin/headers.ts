// Which upstream response headers `pipe` may relay to the client: never the hop-by-hop ones,
// nor those the upstream's `connection` header names. (`forward` filters request headers with
// the same list: forward.ts.)
import { validateHeaderName, validateHeaderValue, type OutgoingHttpHeaders } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { RewriteHeaders, UpstreamResponse } from './types.js'
import { isPromise } from './user-code.js'

/**
 * Headers that describe one connection, not the message: never copied from an upstream
 * response to the client (RFC 9110 §7.6.1, plus the legacy `keep-alive`/`proxy-*` ones).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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

/**
 * An upstream status the client may get: 100–599, as `reply.status()` and HTTP/2 accept. Node's
 * HTTP/1 response would send 600–999 as they are; they are a bad upstream response (502).
 */
export function isRelayableStatus (statusCode: number): boolean {
  return statusCode >= 100 && statusCode <= 599
}

/** The upstream headers that may reach the client. */
export function forwardableHeaders (headers: UpstreamResponse['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const name of Object.keys(headers)) {
    if (!HOP_BY_HOP.has(name)) out[name] = headers[name]
  }
  const connection = headers.connection
  return connection === undefined ? out : withoutNamed(out, connection)
}

/**
 * Removes the headers that the upstream's `connection` header names. Its usual values
 * (`keep-alive`, `close`) name only hop-by-hop headers, which are already gone: no copy then.
 */
function withoutNamed (out: OutgoingHttpHeaders, connection: string | string[]): OutgoingHttpHeaders {
  if (connection === 'keep-alive' || connection === 'close') return out
  let named: Set<string> | null = null
  for (const token of String(connection).split(',')) {
    const name = token.trim().toLowerCase()
    if (Object.hasOwn(out, name)) (named ??= new Set()).add(name)
  }
  if (named === null) return out
  const kept: OutgoingHttpHeaders = {}
  for (const name of Object.keys(out)) {
    if (!named.has(name)) kept[name] = out[name]
  }
  return kept
}

/**
 * What an app's `rewriteHeaders` makes of the headers `pipe` would relay: its answer, less the
 * names whose value is `undefined` or `null`. Throws what it throws, a TypeError when it does
 * not return an object, and Node's own error for a name or value Node would refuse to write
 * (CR/LF, a name that is not a token): the callback's mistake, told apart here from a head
 * the client's protocol refuses later. (What the upstream sent passed undici's parser, which
 * refuses the same characters.)
 */
export function rewrittenHeaders (rewrite: RewriteHeaders, headers: OutgoingHttpHeaders, request: FastifyRequest): OutgoingHttpHeaders {
  const answer: unknown = rewrite(headers as Parameters<RewriteHeaders>[0], request)
  if (answer === null || typeof answer !== 'object') throw new TypeError(`rewriteHeaders must return an object of headers, got ${answer === null ? 'null' : typeof answer}`)
  if (isPromise(answer)) {
    // The head cannot wait: refused now, and a later rejection is of no one's concern.
    answer.then(undefined, noop)
    throw new TypeError('rewriteHeaders must return an object of headers, got a promise (it runs synchronously)')
  }
  const out: OutgoingHttpHeaders = {}
  for (const name of Object.keys(answer)) {
    const value = (answer as Record<string, unknown>)[name]
    if (value === undefined || value === null) continue
    validateHeaderName(name)
    // As writeHead checks them: each value of an array on its own.
    if (Array.isArray(value)) {
      for (const item of value) validateHeaderValue(name, item)
    } else {
      validateHeaderValue(name, value as string)
    }
    out[name.toLowerCase()] = value as OutgoingHttpHeaders[string]
  }
  return out
}

function noop (): void {}
