// `maxPending`: beyond that many open replies a request is answered at once, cheaply, so that
// a stalled upstream cannot make the process hold sockets and memory without limit.
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { JSON_TYPE } from './body.js'
import type { RouteContext } from './context.js'
import { errorAnswer, LEFT_UNFINISHED, logError, NOT_RENDERED, RENDERED, warnRenderUnfinished, type ErrorAnswer, type Rendering } from './error-answer.js'
import { OverloadedError } from './errors.js'
import { bodyUnread } from './raw-response.js'

// The answer never changes: built once.
const ANSWER = errorAnswer(new OverloadedError())
const LENGTH = String(Buffer.byteLength(ANSWER.body))

/** True when the plugin's or the route's limit of open replies is reached. */
export function overloaded (route: RouteContext): boolean {
  const { plugin } = route
  return (plugin.maxPending > 0 && plugin.registry.size >= plugin.maxPending) ||
    (route.maxPending > 0 && route.open >= route.maxPending)
}

/**
 * `503 FST_ASYNC_ROUTE_OVERLOADED` with `retry-after: 1`, on a hijacked reply, logged at warn
 * once answered. `rendered` is the app's `renderError`, or null.
 */
export function answerOverloaded (route: RouteContext, request: FastifyRequest, fastifyReply: FastifyReply, rendered: ((answer: ErrorAnswer) => Rendering) | null): void {
  const { plugin } = route
  plugin.registry.reject()
  const pending = { pending: plugin.registry.size, routePending: route.open }
  let rendering: Rendering = NOT_RENDERED
  if (rendered !== null) {
    // Its retry-after stays, whatever format the app renders the answer in.
    fastifyReply.header('retry-after', '1')
    rendering = rendered(ANSWER)
  }
  if (rendering !== RENDERED) sendDefault(request, fastifyReply)
  // Logged once answered: a logger that throws leaves no client waiting.
  request.log.warn(pending, 'async route overloaded (maxPending): answered 503')
  if (rendering === LEFT_UNFINISHED) warnRenderUnfinished(request.log)
}

function sendDefault (request: FastifyRequest, fastifyReply: FastifyReply): void {
  // Headers set by hooks (CORS, request ids) are the base, as for every answer of the plugin.
  const headers = fastifyReply.getHeaders()
  headers['content-type'] = JSON_TYPE
  headers['content-length'] = LENGTH
  headers['retry-after'] = '1'
  // An upload nobody will read: the connection ends with this answer (see bodyUnread).
  if (request.raw.httpVersionMajor !== 2 && bodyUnread(request.raw)) headers.connection = 'close'
  const raw = fastifyReply.raw
  try {
    raw.writeHead(ANSWER.status, headers as OutgoingHttpHeaders)
    raw.end(ANSWER.body)
  } catch (error) {
    // A header Node refuses (set unchecked by a hook): never a throw from a route handler here.
    raw.destroy()
    logError(request.log, 'error', error, 'async route: the overload answer could not be sent')
  }
}
