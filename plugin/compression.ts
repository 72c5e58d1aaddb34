// The `compress` option: what `@fastify/compress` does for ordinary routes, for the answers a
// reply writes itself (hijacked replies skip `onSend`). Which answers qualify, which encoding
// the client gets, and the compressor; the reply decides when its head goes out and writes
// through the compressor (reply.ts).
import type { OutgoingHttpHeaders } from 'node:http'
import { constants, createBrotliCompress, createDeflate, createGzip, type BrotliCompress, type Deflate, type Gzip } from 'node:zlib'
import { Negotiator } from '@fastify/accept-negotiator'
import type { CompressOptions } from './types.js'

export type Encoding = 'br' | 'gzip' | 'deflate'
export type Compressor = BrotliCompress | Gzip | Deflate

const ENCODINGS: ReadonlySet<string> = new Set(['br', 'gzip', 'deflate'])
const FIELDS = new Set(['threshold', 'encodings', 'brotliQuality', 'level'])

export interface CompressPolicy {
  /** Bytes: a `finish()` body (or a relayed body whose `content-length` says so) below it goes as it is. */
  readonly threshold: number
  readonly brotliQuality: number
  readonly level: number
  /** Ours, in order of preference. */
  readonly encodings: readonly Encoding[]
  /** Picks the encoding for an `accept-encoding` value (the client's q-values, then our order). */
  readonly negotiator: Negotiator
}

/** Reports an invalid field: `name` is `compress` or `compress.<field>`. */
export type Refuse = (name: string, expected: string, value: unknown) => never

function integer (value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
}

/**
 * Distinct `accept-encoding` values remembered, at most. A client controls the header: an
 * unbounded cache would grow with every value it invents.
 */
const MAX_REMEMBERED = 256

class BoundedCache<V> extends Map<string, V> {
  override set (key: string, value: V): this {
    if (this.size >= MAX_REMEMBERED) this.clear()
    return super.set(key, value)
  }
}

/** `false`/`undefined` → null (off); `true` → the defaults; an object → checked field by field. */
export function resolveCompress (value: unknown, refuse: Refuse): CompressPolicy | null {
  if (value === undefined || value === false) return null
  if (value !== true && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    refuse('compress', 'a boolean or an object { threshold, encodings, brotliQuality, level }', value)
  }
  const options = (value === true ? {} : value) as CompressOptions
  for (const key of Object.keys(options)) {
    if (!FIELDS.has(key)) refuse(`compress.${key}`, 'absent (not a compress option)', (options as Record<string, unknown>)[key])
  }
  const { threshold = 1024, encodings = ['br', 'gzip', 'deflate'], brotliQuality = 4, level = 6 } = options
  if (!integer(threshold, 0, Number.MAX_SAFE_INTEGER)) refuse('compress.threshold', 'an integer from 0 (bytes)', threshold)
  if (!Array.isArray(encodings) || encodings.length === 0 || !encodings.every((item) => ENCODINGS.has(item))) {
    refuse('compress.encodings', 'a non-empty array of "br", "gzip", "deflate"', encodings)
  }
  if (!integer(brotliQuality, 0, 11)) refuse('compress.brotliQuality', 'an integer from 0 to 11', brotliQuality)
  if (!integer(level, 0, 9)) refuse('compress.level', 'an integer from 0 to 9', level)
  const ours = [...new Set(encodings)] as Encoding[]
  return {
    threshold,
    brotliQuality,
    level,
    encodings: ours,
    negotiator: new Negotiator({ supportedValues: ours, cache: new BoundedCache() })
  }
}

/** `text/*` (event streams included), JSON, JavaScript, XML, `+json`, `+xml`, SVG. */
const COMPRESSIBLE = /^\s*(?:text\/|application\/(?:json|javascript|x-javascript|ecmascript|xml|x-ndjson|[\w.-]+\+(?:json|xml))\s*(?:;|$)|image\/svg\+xml)/i

/**
 * The answer's body may be compressed at all: a compressible type, not already encoded, no
 * `cache-control: no-transform`, not a `206`; whatever the client accepts. Such an answer
 * varies by `accept-encoding`.
 */
export function compressible (statusCode: number, headers: OutgoingHttpHeaders): boolean {
  if (statusCode === 206 || statusCode === 204 || statusCode === 304) return false
  const type = headers['content-type']
  if (typeof type !== 'string' || !COMPRESSIBLE.test(type)) return false
  const encoding = headers['content-encoding']
  if (encoding !== undefined && String(encoding).trim().toLowerCase() !== 'identity') return false
  const cacheControl = headers['cache-control']
  return cacheControl === undefined || !/(?:^|,)\s*no-transform\s*(?:,|$)/i.test(String(cacheControl))
}

/** The encoding for this client, or null when it accepts none of ours. */
export function negotiate (policy: CompressPolicy, acceptEncoding: string | undefined): Encoding | null {
  // (Node joins repeated `accept-encoding` headers into one value.)
  if (acceptEncoding === undefined) return null
  let value = acceptEncoding.toLowerCase()
  if (value.includes('*')) value = expandWildcard(value, policy.encodings)
  return policy.negotiator.negotiate(value) as Encoding | null
}

/**
 * `*` stands for the codings the client did not name (RFC 9110 §12.5.3): spelt out as ours it
 * did not name, with the wildcard's parameters, so that `br;q=0, *` never picks br.
 */
function expandWildcard (value: string, ours: readonly Encoding[]): string {
  const parts = value.split(',')
  const named = new Set<string>()
  for (const part of parts) named.add((part.split(';', 1)[0] as string).trim())
  const unnamed = ours.filter((encoding) => !named.has(encoding))
  const out: string[] = []
  for (const part of parts) {
    const semicolon = part.indexOf(';')
    const token = (semicolon < 0 ? part : part.slice(0, semicolon)).trim()
    if (token !== '*') {
      out.push(part)
      continue
    }
    const params = semicolon < 0 ? '' : part.slice(semicolon)
    for (const encoding of unnamed) out.push(encoding + params)
  }
  return out.join(',')
}

/** Adds `accept-encoding` to `vary` (merged with what is there, `Origin` from a CORS plugin say). */
export function varyOnEncoding (headers: OutgoingHttpHeaders): void {
  const vary = headers.vary
  if (vary === undefined) {
    headers.vary = 'accept-encoding'
    return
  }
  const text = Array.isArray(vary) ? vary.join(', ') : String(vary)
  if (/(?:^|,)\s*(?:\*|accept-encoding)\s*(?:,|$)/i.test(text)) return
  headers.vary = `${text}, accept-encoding`
}

/** The head of a compressed answer: `content-encoding`, no `content-length`, a weak `etag`. */
export function markEncoded (headers: OutgoingHttpHeaders, encoding: Encoding): void {
  headers['content-encoding'] = encoding
  delete headers['content-length']
  const etag = headers.etag
  if (typeof etag === 'string' && !etag.startsWith('W/')) headers.etag = `W/${etag}`
}

export function createCompressor (policy: CompressPolicy, encoding: Encoding): Compressor {
  if (encoding === 'br') {
    return createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: policy.brotliQuality } })
  }
  return encoding === 'gzip' ? createGzip({ level: policy.level }) : createDeflate({ level: policy.level })
}
