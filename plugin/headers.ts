// Which upstream response headers `pipe` may relay to the client: never the hop-by-hop ones,
// nor those the upstream's `connection` header names.
import type { OutgoingHttpHeaders } from 'node:http'
import { util as undiciUtil } from 'undici'
import type { UpstreamResponse } from './types.js'

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

/** Like `forwardableHeaders`, from undici's raw `[name, value, …]` list, in one pass. */
export function forwardableRawHeaders (raw: Buffer[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = undiciUtil.headerNameToString(raw[i] as Buffer)
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') connection = connection === undefined ? (raw[i + 1] as Buffer).toString('latin1') : `${connection},${(raw[i + 1] as Buffer).toString('latin1')}`
      continue
    }
    // Assigning `__proto__` would not create a header (forwardableHeaders drops it the same way).
    if (name === '__proto__') continue
    const value = (raw[i + 1] as Buffer).toString('latin1')
    const previous = out[name]
    if (previous === undefined) {
      out[name] = value
    } else if (Array.isArray(previous)) {
      previous.push(value)
    } else {
      out[name] = [String(previous), value]
    }
  }
  return connection === undefined ? out : withoutNamed(out, connection)
}
