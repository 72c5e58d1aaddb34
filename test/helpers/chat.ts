// The chat example (examples/chat) for its tests: an app on a free port with its logs
// captured, and the page's two requests (post a message, long-poll for newer ones).
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { buildChatApp, MessageBuffer, type Message, type Room } from '../../examples/chat/chat.js'
import { request, type ClientResponse } from './client.js'
import type { Teardown } from './context.js'
import { captureLogs, type LogLine } from './logs.js'

export interface Chat<R extends Room = MessageBuffer> { app: FastifyInstance, room: R, url: string, logs: LogLine[] }

/** The chat on 127.0.0.1, logging at debug level into `logs`; closed when the test ends. */
export async function startChat<R extends Room = MessageBuffer> (t: Teardown, pollTimeout = 5_000, room: R = new MessageBuffer() as unknown as R, fastify: FastifyServerOptions = {}): Promise<Chat<R>> {
  const { logs, logger } = captureLogs('debug')
  const app = await buildChatApp({ room, pollTimeout, fastify: { logger, ...fastify } })
  t.teardown(() => app.close())
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, room, url, logs }
}

/** POSTs a message as the page does: the raw answer. */
export async function postAnswer (url: string, body: string, timeout?: number): Promise<ClientResponse> {
  return await request(`${url}/a/message/new`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ body }),
    timeout
  })
}

/** POSTs a message; the message stored, or throws. */
export async function post (url: string, body: string): Promise<Message> {
  const res = await postAnswer(url, body)
  if (res.statusCode !== 200) throw new Error(`post answered ${res.statusCode}: ${res.body}`)
  return JSON.parse(res.body) as Message
}

/** One long poll, as the page sends it. */
export function poll (url: string, cursor?: number, timeout = 3000): Promise<{ statusCode: number, type: string, messages: Message[] }> {
  const query = cursor === undefined ? '' : `?cursor=${cursor}`
  return request(`${url}/a/message/updates${query}`, { timeout }).then((res) => ({
    statusCode: res.statusCode,
    type: String(res.headers['content-type']),
    messages: res.statusCode === 200 ? (JSON.parse(res.body) as { messages: Message[] }).messages : []
  }))
}
