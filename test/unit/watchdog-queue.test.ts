// A route's WatchdogQueue (plugin/watchdog-queue.ts), without sockets: replies fire in the
// order they are due and only once due, a reply that left never fires, a watchdog that ends
// other waiting replies, a queue emptied and filled again, a reply deleted twice or never
// added, a watchdog that throws. Watchdogs over real sockets are in test/watchdog.test.ts.
import { AsyncResource } from 'node:async_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { WatchdogQueue, type Watched } from '../../plugin/watchdog-queue.js'
import { kAsyncContext, kDeadline, kQueueNext, kQueuePrev, kWatchdogFired } from '../../plugin/symbols.js'

interface FakeReply extends Watched {
  readonly name: string
}

function fakeReply (name: string, dueIn: number, fired: string[], onFire: () => void = () => {}): FakeReply {
  return {
    name,
    [kQueuePrev]: null,
    [kQueueNext]: null,
    [kDeadline]: Date.now() + dueIn,
    [kAsyncContext]: new AsyncResource('test'),
    [kWatchdogFired]: () => {
      fired.push(name)
      onFire()
    }
  }
}

/** Waits until `fired` has `count` names, or 2 s. */
async function firedCount (fired: string[], count: number): Promise<void> {
  const until = Date.now() + 2000
  while (fired.length < count && Date.now() < until) await sleep(5)
}

test('replies fire in due order, only once due; one that left, first, between or last, never fires', async (t) => {
  const queue = new WatchdogQueue()
  const fired: string[] = []
  const replies = ['a', 'b', 'c', 'd', 'e'].map((name, i) => fakeReply(name, 20 + i * 20, fired))
  for (const reply of replies) queue.add(reply)
  const [a, , c, , e] = replies as [FakeReply, FakeReply, FakeReply, FakeReply, FakeReply]
  queue.delete(a)
  queue.delete(c)
  queue.delete(e)
  t.same(fired, [], 'nothing fires before its time')
  await firedCount(fired, 2)
  t.same(fired, ['b', 'd'])
  for (const reply of replies) {
    t.equal(reply[kQueuePrev], null, `${reply.name} keeps no link`)
    t.equal(reply[kQueueNext], null)
  }
})

test('a watchdog that ends other waiting replies: they leave the queue and never fire', async (t) => {
  const queue = new WatchdogQueue()
  const fired: string[] = []
  const later: FakeReply[] = []
  // a's watchdog ends b (due with it) and c (due later), as an onTimeout ending other replies would.
  const a = fakeReply('a', 10, fired, () => { for (const reply of later) queue.delete(reply) })
  later.push(fakeReply('b', 10, fired), fakeReply('c', 200, fired))
  const d = fakeReply('d', 30, fired)
  queue.add(a)
  for (const reply of later) queue.add(reply)
  queue.add(d)
  await firedCount(fired, 2)
  await sleep(250)
  t.same(fired, ['a', 'd'])
})

test('a queue emptied, by leaving or by firing, takes replies again', async (t) => {
  const queue = new WatchdogQueue()
  const fired: string[] = []
  const a = fakeReply('a', 10, fired)
  queue.add(a)
  queue.delete(a)
  const b = fakeReply('b', 10, fired)
  queue.add(b)
  await firedCount(fired, 1)
  t.same(fired, ['b'], 'the timer armed for a fires b')
  const c = fakeReply('c', 10, fired)
  queue.add(c)
  await firedCount(fired, 2)
  t.same(fired, ['b', 'c'], 'a queue that fired empty arms a new timer')
})

test('a reply deleted twice, or never added, leaves the waiting replies and the timer alone', async (t) => {
  const queue = new WatchdogQueue()
  const fired: string[] = []
  const [a, b, c] = ['a', 'b', 'c'].map((name, i) => fakeReply(name, 20 + i * 20, fired)) as [FakeReply, FakeReply, FakeReply]
  queue.add(a)
  queue.add(b)
  queue.delete(a)
  queue.delete(a)
  queue.delete(c)
  await firedCount(fired, 1)
  t.same(fired, ['b'], 'b still fires')
  queue.add(c)
  await firedCount(fired, 2)
  t.same(fired, ['b', 'c'], 'and the queue still takes replies')
})

test('a watchdog that throws: the error reaches the process, the replies due with it and after it still fire', async (t) => {
  const errors: unknown[] = []
  const onUncaught = (error: unknown): void => { errors.push(error) }
  process.prependListener('uncaughtException', onUncaught)
  t.teardown(() => { process.off('uncaughtException', onUncaught) })
  const queue = new WatchdogQueue()
  const fired: string[] = []
  const broken = new Error('the app\'s logger threw')
  queue.add(fakeReply('a', 10, fired, () => { throw broken }))
  queue.add(fakeReply('b', 10, fired))
  queue.add(fakeReply('c', 60, fired))
  await firedCount(fired, 3)
  t.same(fired, ['a', 'b', 'c'])
  t.same(errors, [broken], 'thrown once, to the process')
  const d = fakeReply('d', 10, fired)
  queue.add(d)
  await firedCount(fired, 4)
  t.same(fired, ['a', 'b', 'c', 'd'], 'and the queue still takes replies')
})
