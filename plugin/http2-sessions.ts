// HTTP/2 sessions and close(). Fastify's server.close() waits for every connection, and an
// HTTP/2 client keeps its session open between requests: before Node 24 (which closes the
// sessions in server.close() itself), an idle session held app.close() until Fastify's
// http2SessionTimeout (72 s by default) unless `forceCloseConnections` was set. The plugin
// keeps the server's sessions and closes them once its part of close() is over: gracefully
// (GOAWAY), so the streams still open run to their end and then the session closes.
import type { EventEmitter } from 'node:events'
import type { Http2Session } from 'node:http2'

/** The open HTTP/2 sessions of `server` from now on (an HTTP/1 server has none). */
export function sessionsOf (server: EventEmitter): ReadonlySet<Http2Session> {
  const sessions = new Set<Http2Session>()
  server.on('session', (session: Http2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  })
  return sessions
}

/** Asks every session to close once its open streams have ended. */
export function closeSessions (sessions: ReadonlySet<Http2Session>): void {
  for (const session of sessions) session.close()
}
