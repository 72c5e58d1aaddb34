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

export interface EncodedBody {
  payload: string | Uint8Array | undefined
  type: string | undefined
}

/** string → text, bytes → octets, nothing → empty, anything else → JSON (may throw). */
export function encodeBody (body: unknown): EncodedBody {
  if (body === undefined || body === null) return { payload: undefined, type: undefined }
  if (typeof body === 'string') return { payload: body, type: TEXT }
  if (isBytes(body)) return { payload: body, type: OCTET }
  return { payload: JSON.stringify(body), type: JSON_TYPE }
}
