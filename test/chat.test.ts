// The long-polling chat example (examples/chat), over real sockets: a long poll waits until a
// message newer than its cursor exists, a post wakes every waiter at once, a poll that waited
// too long gets an empty list, and a client that leaves is off the waiter list and pending().
import http2 from 'node:http2'
import type { FastifyServerOptions } from 'fastify'
import t from 'tap'
import { MessageBuffer, type Message } from '../examples/chat/chat.js'
import { startExample } from './helpers/example.js'
import { LEVEL } from './helpers/app.js'
import { post, poll, startChat } from './helpers/chat.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'

t.test('the page, its script and its style are served', async (t) => {
  const { url } = await startChat(t)
  const page = await request(`${url}/`)
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /<script src="\/chat.js"/)
  t.equal(page.headers['content-security-policy'], "default-src 'self'")
  t.match((await request(`${url}/chat.js`)).headers['content-type'], /^text\/javascript/)
  t.match((await request(`${url}/chat.css`)).headers['content-type'], /^text\/css/)
})

t.test('a long poll waits until a post wakes it', async (t) => {
  const { app, room, url } = await startChat(t)
  const started = Date.now()
  const waiting = poll(url, 0)
  await waitFor(() => room.waiting === 1, 2000, 'the poll to wait')
  t.equal(app.asyncRoute.pending().length, 1, 'the reply is pending')
  t.equal(await Promise.race([waiting.then(() => 'answered'), sleep(150).then(() => 'still waiting')]), 'still waiting')
  const message = await post(url, 'hello')
  const answer = await waiting
  t.equal(answer.statusCode, 200)
  t.equal(answer.type, 'application/json; charset=utf-8')
  t.same(answer.messages, [message])
  t.match(message, { id: 1, body: 'hello' })
  t.ok(Date.now() - started < 2000)
  t.equal(room.waiting, 0, 'off the waiter list')
  t.same(app.asyncRoute.pending(), [])
  t.match(app.asyncRoute.stats(), { finished: 1, timedOut: 0, aborted: 0, failed: 0, pending: 0 })
})

t.test('one post wakes every waiter, each once', async (t) => {
  const { room, url } = await startChat(t)
  const polls = Array.from({ length: 20 }, () => poll(url, 0))
  await waitFor(() => room.waiting === 20, 3000, '20 polls to wait')
  const message = await post(url, 'to all')
  for (const answer of await Promise.all(polls)) t.same(answer.messages, [message])
  t.equal(room.waiting, 0)
})

t.test('cursor: only what is newer; a cursor from before a restart gets everything', async (t) => {
  const { room, url } = await startChat(t, 5_000, new MessageBuffer(3))
  const sent: Message[] = []
  for (const body of ['one', 'two', 'three', 'four']) sent.push(await post(url, body))
  const ids = (answer: { messages: Message[] }): number[] => answer.messages.map((message) => message.id)
  t.same(ids(await poll(url)), [2, 3, 4], 'no cursor: the whole cache (3 messages kept)')
  t.same(ids(await poll(url, 0)), [2, 3, 4], 'cursor 0: the same')
  t.same(ids(await poll(url, 1)), [2, 3, 4], 'a cursor older than the cache: all it has')
  t.same(ids(await poll(url, 2)), [3, 4])
  t.same(ids(await poll(url, 3)), [4])
  t.same(ids(await poll(url, 99)), [2, 3, 4], 'a cursor newer than anything here: everything')
  const latest = poll(url, 4)
  await waitFor(() => room.waiting === 1, 2000, 'cursor 4 (the newest) to wait')
  sent.push(await post(url, 'five'))
  t.same(ids(await latest), [5], 'the newest cursor waits for the next message')
  t.equal(room.waiting, 0)
  const invalid = await poll(url, -1)
  t.equal(invalid.statusCode, 400, 'schema validation before the handler')
  t.equal((await request(`${url}/a/message/updates?cursor=x`)).statusCode, 400)
  t.equal((await request(`${url}/a/message/new`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"body":""}' })).statusCode, 400)
  t.same(sent.map((message) => message.id), [1, 2, 3, 4, 5])
})

t.test('a poll that waited too long gets an empty list with 200, then polls again', async (t) => {
  const { app, room, url, logs } = await startChat(t, 300)
  const started = Date.now()
  const answer = await poll(url, 0)
  const waited = Date.now() - started
  t.equal(answer.statusCode, 200, 'a normal long-poll timeout, not a 504')
  t.equal(answer.type, 'application/json; charset=utf-8')
  t.same(answer.messages, [])
  t.ok(waited >= 250 && waited < 2000, `answered by the route's watchdog (${waited} ms)`)
  t.equal(room.waiting, 0, 'off the waiter list')
  t.match(app.asyncRoute.stats(), { timedOut: 1, pending: 0 })
  t.notOk(logs.some((line) => line.level >= LEVEL.warn), 'a routine long-poll timeout: no warning, no error')

  const again = poll(url, 0)
  await waitFor(() => room.waiting === 1, 2000, 'the next poll')
  const message = await post(url, 'after a timeout')
  t.same((await again).messages, [message])
})

t.test('a client that leaves is off the waiter list and out of pending()', async (t) => {
  const { app, room, url } = await startChat(t)
  const staying = poll(url, 0)
  const leaving = await sendOnly(`${url}/a/message/updates?cursor=0`)
  await waitFor(() => room.waiting === 2 && app.asyncRoute.pending().length === 2, 2000, 'two waiters')
  leaving.destroy()
  await waitFor(() => room.waiting === 1 && app.asyncRoute.pending().length === 1, 2000, 'the leaver to be gone')
  t.match(app.asyncRoute.stats(), { aborted: 1, pending: 1 })
  const message = await post(url, 'still here?')
  t.same((await staying).messages, [message], 'the other one is answered')
  t.equal(room.waiting, 0)
  t.same(app.asyncRoute.pending(), [])
})

t.test('HTTP/2: many long polls on one session, woken by one post', async (t) => {
  const { room, url } = await startChat(t, 5_000, new MessageBuffer(), { http2: true } as unknown as FastifyServerOptions)
  const session = http2.connect(url)
  session.on('error', () => {})
  t.teardown(() => session.close())
  const get = (path: string, body?: string): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
    const headers = body === undefined ? { ':path': path } : { ':path': path, ':method': 'POST', 'content-type': 'application/json' }
    const req = session.request(headers, { endStream: body === undefined })
    let status = 0
    let text = ''
    const timer = setTimeout(() => reject(new Error(`no HTTP/2 answer for ${path} within 3000 ms`)), 3000)
    req.setEncoding('utf8')
    req.on('response', (head) => { status = Number(head[':status']) })
    req.on('data', (chunk: string) => { text += chunk })
    req.on('error', () => {})
    req.on('close', () => { clearTimeout(timer); resolve({ status, body: text }) })
    if (body !== undefined) req.end(body)
  })
  const polls = Array.from({ length: 50 }, () => get('/a/message/updates?cursor=0'))
  await waitFor(() => room.waiting === 50, 3000, '50 streams to wait')
  const posted = await get('/a/message/new', JSON.stringify({ body: 'h2' }))
  t.equal(posted.status, 200)
  const message = JSON.parse(posted.body) as Message
  for (const answer of await Promise.all(polls)) {
    t.equal(answer.status, 200)
    t.same(JSON.parse(answer.body), { messages: [message] })
  }
})

t.test('npm run chat: prints its URL and serves the page', async (t) => {
  const { child, address, exited } = await startExample(t, 'examples/chat/main.ts')
  const page = await request(`${address}/`)
  t.equal(page.statusCode, 200)
  t.match(page.body, /<title>Chat/)
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
})
