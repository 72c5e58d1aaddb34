// The differences between an HTTP/1 response and an HTTP/2 one that the reply must mind:
// HTTP/2 keeps `destroyed` and `writableNeedDrain` on its stream, has no socket of its own
// (its `socket` is the whole session) and is cut by resetting only its stream.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { constants as http2Constants } from 'node:http2'

type Http2Raw = ServerResponse & { stream: { destroyed: boolean, writableNeedDrain: boolean, close (code: number): void } }

/** The client has gone: the response can no longer be written. */
export function isGone (raw: ServerResponse, http2: boolean): boolean {
  return http2 ? (raw as Http2Raw).stream.destroyed : raw.destroyed
}

/** The socket buffer is full: wait for `drain`. */
export function needsDrain (raw: ServerResponse, http2: boolean): boolean {
  return http2 ? (raw as Http2Raw).stream.writableNeedDrain : raw.writableNeedDrain
}

/** Cuts the response so the client sees it truncated, never cleanly ended. */
export function cut (raw: ServerResponse, http2: boolean): void {
  if (http2) {
    (raw as Http2Raw).stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR)
  } else {
    raw.destroy()
  }
}

/** Ends the HTTP/1 connection once a response that is already streaming is complete (app closing). */
export function closeConnectionAfter (raw: ServerResponse): void {
  const socket = raw.socket
  if (socket !== null) raw.once('finish', () => socket.end())
}

/**
 * The request has a body that has not all arrived: an answer sent now must end its HTTP/1
 * connection (`connection: close`), or the socket would wait on a body nobody reads. (Node
 * already closes an HTTP/2 stream whose answer was sent before its request body was read.)
 */
export function bodyUnread (request: IncomingMessage): boolean {
  if (request.complete) return false
  const { headers } = request
  const length = headers['content-length']
  return length === undefined ? headers['transfer-encoding'] !== undefined : length !== '0'
}
