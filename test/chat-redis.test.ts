// The chat example with its room shared through Redis (examples/chat/redis-room.ts), against a
// real redis-server of the test's own (helpers/redis.ts): processes started as a user starts
// them (`REDIS_URL=… npm run chat`, `npm run chat:cluster`) see each other's messages, share
// one history, accept each other's cursors; a process started later shows the history; and
// when Redis is killed, posts answer 503 at once, polls are answered at their timeout, nothing
// crashes or floods the log, and once Redis is back (empty) messages flow again by themselves,
// with ids above every one the pages saw.
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { MessageBuffer, type Message } from '../examples/chat/chat.js'
import { RedisRoom } from '../examples/chat/redis-room.js'
import { LEVEL } from './helpers/app.js'
import { post, postAnswer, poll, startChat } from './helpers/chat.js'
import { sleep, waitFor } from './helpers/client.js'
import type { Teardown } from './helpers/context.js'
import { startExample } from './helpers/example.js'
import { redisMissing, startRedis } from './helpers/redis.js'

const skip = redisMissing() ?? false
if (skip !== false) t.comment(`skipping the Redis tests: ${skip}`)

const ids = (messages: Message[]): number[] => messages.map((message) => message.id)
const stillWaiting = async (answer: Promise<unknown>, ms = 200): Promise<boolean> =>
  await Promise.race([answer.then(() => false), sleep(ms).then(() => true)])

/** A RedisRoom whose outage messages are kept, closed when the test ends. */
function redisRoom (t: Teardown, url: string, size?: number): { room: RedisRoom, logged: Array<{ level: string, message: string }> } {
  const logged: Array<{ level: string, message: string }> = []
  const room = new RedisRoom({
    url,
    size,
    log: {
      info: (message) => logged.push({ level: 'info', message }),
      warn: (message) => logged.push({ level: 'warn', message })
    }
  })
  t.teardown(() => room.close())
  return { room, logged }
}

t.test('two processes, one room: a post to either wakes the polls of both; one history; cursors valid on either', { skip }, async (t) => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url }
  const [a, b] = await Promise.all([startExample(t, 'examples/chat/main.ts', env), startExample(t, 'examples/chat/main.ts', env)])

  const onA = poll(a.address, 0, 5000)
  const onB = poll(b.address, 0, 5000)
  t.ok(await stillWaiting(Promise.race([onA, onB]), 300), 'both polls wait')
  const first = await post(a.address, 'posted to A')
  t.same((await onB).messages, [first], 'the poll waiting on B has it')
  t.same((await onA).messages, [first], 'and so has the one on A')

  const afterFirst = poll(a.address, first.id, 5000) // A's page, with the cursor B gave it
  t.ok(await stillWaiting(afterFirst), 'a cursor from B waits on A')
  const second = await post(b.address, 'posted to B')
  t.same((await afterFirst).messages, [second], 'a page moving from B to A gets only what it lacks')
  t.ok(second.id > first.id, 'ids rise across processes')
  t.same((await poll(b.address, first.id)).messages, [second])
  t.same((await poll(a.address, 0)).messages, [first, second], 'the history on A')
  t.same((await poll(b.address, 0)).messages, [first, second], 'the same history on B')

  const later = await startExample(t, 'examples/chat/main.ts', env)
  t.same((await poll(later.address, 0)).messages, [first, second], 'a process started later shows the history')

  for (const { child, exited } of [a, b, later]) {
    child.kill('SIGTERM')
    t.equal(await exited, 0, 'stops cleanly on SIGTERM')
  }
})

t.test('npm run chat:cluster: worker processes on one port share one room', { skip }, async (t) => {
  const redis = await startRedis(t)
  const { child, address, exited } = await startExample(t, 'examples/chat/cluster.ts', { REDIS_URL: redis.url, CHAT_WORKERS: '2' })
  // The primary's children that run the example (not, say, a TypeScript transform service).
  const workers = spawnSync('pgrep', ['-P', String(child.pid), '-f', 'examples/chat/cluster'], { encoding: 'utf8' }).stdout.trim().split('\n')
  t.equal(workers.length, 2, 'two worker processes')
  // Each request on a new connection: node:cluster hands them to the workers in turn.
  const polls = Array.from({ length: 4 }, () => poll(address, 0, 5000))
  t.ok(await stillWaiting(Promise.race(polls), 300), 'the polls wait')
  const message = await post(address, 'to every worker')
  for (const answer of await Promise.all(polls)) t.same(answer.messages, [message])
  for (let n = 0; n < 4; n++) t.same((await poll(address, 0)).messages, [message], 'the same history from each worker')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'the workers stop, then the primary')
})

t.test('the history keeps the last `size` messages; a page ahead of a process waits there', { skip }, async (t) => {
  const redis = await startRedis(t)
  const one = await startChat(t, 5_000, redisRoom(t, redis.url, 5).room)
  const two = await startChat(t, 5_000, redisRoom(t, redis.url, 5).room)
  t.ok(await one.room.ready(5000) && await two.room.ready(5000), 'both read the history')
  const sent: Message[] = []
  for (let n = 1; n <= 8; n++) sent.push(await post(n % 2 === 0 ? one.url : two.url, `message ${n}`))
  const last = sent[sent.length - 1] as Message
  await waitFor(() => one.room.buffer.lastId === last.id && two.room.buffer.lastId === last.id, 3000, 'both mirrors to have every message')
  t.same(ids((await poll(one.url, 0)).messages), ids(sent.slice(3)), 'the last 5')
  t.same(ids((await poll(two.url, 0)).messages), ids(sent.slice(3)), 'the same last 5 on the other process')
  t.ok(ids(sent).every((id, n) => n === 0 || id > (sent[n - 1] as Message).id), 'ids rise')

  // A process whose reader is behind: a page that saw a newer message elsewhere waits for the
  // next one instead of being sent everything again (the page would drop it all and poll at once).
  const mirror = await startChat(t, 5_000, new MessageBuffer(5, true))
  mirror.room.receive([{ id: 10, body: 'ten', at: 0 }])
  const ahead = poll(mirror.url, 12)
  await waitFor(() => mirror.room.waiting === 1, 2000, 'the page ahead to wait')
  mirror.room.receive([{ id: 12, body: 'twelve: the page has it', at: 0 }])
  t.ok(await stillWaiting(ahead), 'still waiting: nothing it lacks yet')
  t.equal(mirror.room.waiting, 1)
  mirror.room.receive([{ id: 13, body: 'thirteen', at: 0 }, { id: 11, body: 'older: ignored', at: 0 }])
  t.same(ids((await ahead).messages), [13])
  t.same(ids(mirror.room.since(0)), [10, 12, 13])
})

t.test('Redis killed mid-run: posts 503 at once, polls answered at timeout, no crash; back empty: messages flow, ids keep rising', { skip }, async (t) => {
  const redis = await startRedis(t)
  const pollTimeout = 400
  const first = redisRoom(t, redis.url)
  const second = redisRoom(t, redis.url)
  const one = await startChat(t, pollTimeout, first.room)
  const two = await startChat(t, pollTimeout, second.room)
  const proc = await startExample(t, 'examples/chat/main.ts', { REDIS_URL: redis.url })
  const procLines: string[] = []
  proc.child.stdout.on('data', (chunk: Buffer) => procLines.push(...chunk.toString().split('\n').filter((line) => line !== '')))
  t.ok(await first.room.ready(5000) && await second.room.ready(5000))

  const before = await post(proc.address, 'before the outage')
  t.same((await poll(two.url, 0)).messages, [before])
  let cursor = before.id // the page's cursor

  await redis.kill()
  const waiting = poll(two.url, cursor) // a page on the second process
  for (const url of [one.url, proc.address]) {
    const started = Date.now()
    const answer = await postAnswer(url, 'while Redis is down', 2000)
    const took = Date.now() - started
    t.equal(answer.statusCode, 503, 'the post is refused')
    t.same(JSON.parse(answer.body), { error: 'the chat room is unavailable, try again' })
    t.ok(took < 1000, `at once (${took} ms)`)
  }
  const started = Date.now()
  const timedOut = await waiting
  const waited = Date.now() - started
  t.equal(timedOut.statusCode, 200, 'the poll is answered at its timeout…')
  t.same(timedOut.messages, [], '…with an empty list')
  t.ok(waited < 2000, `within its timeout (${waited} ms after the posts)`)
  const again = await poll(one.url, cursor)
  t.same([again.statusCode, again.messages], [200, []], 'and so is the next one')
  await sleep(1000) // the clients try to reconnect meanwhile

  await redis.restart() // same port, empty: no persistence
  let back: Message | undefined
  for (let deadline = Date.now() + 10_000; back === undefined && Date.now() < deadline;) {
    const answer = await postAnswer(proc.address, 'Redis is back', 2000)
    if (answer.statusCode === 200) back = JSON.parse(answer.body) as Message
    else await sleep(100)
  }
  t.ok(back !== undefined, 'the process that posted before the outage posts again, by itself')
  const resumed = back as Message
  t.ok(resumed.id > cursor, `ids keep rising above what the page saw (${resumed.id} > ${cursor})`)
  t.same((await poll(two.url, cursor)).messages, [resumed], 'the page on the second process gets it')
  cursor = resumed.id
  const nextOnOne = poll(one.url, cursor, 3000)
  await sleep(50)
  const fromTwo = await post(two.url, 'and the other process too')
  t.ok(fromTwo.id > cursor)
  t.same((await nextOnOne).messages.map((message) => message.body).slice(-1), ['and the other process too'])
  await waitFor(() => first.room.buffer.lastId === fromTwo.id, 3000, 'the first process to read it')
  t.same(ids((await poll(one.url, 0)).messages), [resumed.id, fromTwo.id], 'the history is what Redis holds now, on every process')
  t.same(ids((await poll(proc.address, 0)).messages), [resumed.id, fromTwo.id])

  t.equal(proc.child.exitCode, null, 'the process is still running')
  for (const { logged } of [first, second]) {
    t.same(logged.map((line) => line.level), ['warn', 'info'], 'one warning for the outage, one line when it is over')
  }
  const procWarnings = procLines.filter((line) => line.startsWith('{') && (JSON.parse(line) as { level: number }).level >= LEVEL.warn)
  t.equal(procWarnings.length, 1, `the process logged the outage once: ${procWarnings.join('\n')}`)
  t.notOk(one.logs.concat(two.logs).some((line) => line.level >= LEVEL.error), 'no error in the apps\' logs')
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0)
})
