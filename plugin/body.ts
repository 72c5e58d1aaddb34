// How a body given to `finish()` or `write()` becomes bytes and a content type.

export const TEXT = 'text/plain; charset=utf-8'
export const OCTET = 'application/octet-stream'
export const JSON_TYPE = 'application/json; charset=utf-8'

export function isBytes (value: unknown): value is Uint8Array {
  return value instanceof Uint8Array
}

export function byteLength (chunk: string | Uint8Array): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength
}

/** The content type `finish()` gives a body: string → text, bytes → octets, nothing → none, anything else (`null` too) → JSON. */
export function bodyType (body: unknown): string | undefined {
  if (body === undefined) return undefined
  if (typeof body === 'string') return TEXT
  return isBytes(body) ? OCTET : JSON_TYPE
}

/** What `finish()` sends of a body: strings and bytes as they are, nothing as nothing, anything else (`null` too) as JSON (may throw). */
export function encodeBody (body: unknown): string | Uint8Array | undefined {
  if (body === undefined) return undefined
  if (typeof body === 'string' || isBytes(body)) return body
  return JSON.stringify(body)
}
