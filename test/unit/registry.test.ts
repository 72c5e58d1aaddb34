// The registry's list of open replies (plugin/registry.ts), without sockets: the order
// pending() reports, a reply ended twice or never added, and a sweep whose warning ends the
// reply it is at. Open replies over real sockets are in test/introspection.test.ts.
import { AsyncResource } from 'node:async_hooks'
import { test } from 'tap'
import { Registry, type Tracked } from '../../plugin/registry.js'
import { kAsyncContext, kCheckUnfinished, kEndForClose, kHangReport, kOpenNext, kOpenPrev, kPendingEntry } from '../../plugin/symbols.js'
import type { HangReport, PendingReply } from '../../plugin/types.js'

interface FakeReply extends Tracked {
  readonly name: string
}

function fakeReply (name: string, onCheck: (reply: FakeReply) => void = () => {}): FakeReply {
  const reply: FakeReply = {
    name,
    [kOpenPrev]: null,
    [kOpenNext]: null,
    request: {} as Tracked['request'],
    [kAsyncContext]: new AsyncResource('test'),
    [kPendingEntry]: () => ({ id: name }) as unknown as PendingReply,
    [kHangReport]: () => ({}) as HangReport,
    [kEndForClose]: () => {},
    [kCheckUnfinished]: () => { onCheck(reply) }
  }
  return reply
}

const listed = (registry: Registry): string[] => registry.pending().map((entry) => entry.id)

test('pending() is oldest first, whichever reply ends: the first, the last, one between, the only one', async (t) => {
  const registry = new Registry()
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => fakeReply(name)) as [FakeReply, FakeReply, FakeReply, FakeReply]
  for (const reply of [a, b, c, d]) registry.add(reply)
  t.same(listed(registry), ['a', 'b', 'c', 'd'])
  registry.end(b, 'finished')
  t.same(listed(registry), ['a', 'c', 'd'], 'one between')
  registry.end(a, 'failed')
  t.same(listed(registry), ['c', 'd'], 'the first')
  registry.end(d, 'aborted')
  t.same(listed(registry), ['c'], 'the last')
  registry.end(c, 'timedOut')
  t.same(listed(registry), [], 'the only one')
  t.equal(registry.size, 0)
  registry.add(b)
  t.same(listed(registry), ['b'], 'an empty list takes a reply again')
  t.same(registry.stats(), { started: 5, finished: 1, timedOut: 1, aborted: 1, failed: 1, rejected: 0, pending: 1 })
})

test('a reply ended twice, or never added, changes neither the list nor the counts', async (t) => {
  const registry = new Registry()
  const [a, b, c] = ['a', 'b', 'c'].map((name) => fakeReply(name)) as [FakeReply, FakeReply, FakeReply]
  for (const reply of [a, b, c]) registry.add(reply)
  registry.end(a, 'finished')
  registry.end(a, 'finished')
  registry.end(b, 'failed')
  registry.end(b, 'aborted')
  registry.end(fakeReply('never added'), 'finished')
  t.same(listed(registry), ['c'], 'the replies still open are still listed')
  t.same(registry.stats(), { started: 3, finished: 1, timedOut: 0, aborted: 0, failed: 1, rejected: 0, pending: 1 })
  registry.end(c, 'finished')
  t.same(listed(registry), [])
  t.equal(registry.stats().pending, 0)
})

test("the warnUnfinished sweep reaches every open reply even when a warning ends the reply it is at (the logger is the app's code)", async (t) => {
  const registry = new Registry()
  const checked: string[] = []
  const replies = ['a', 'b', 'c'].map((name) => fakeReply(name, (reply) => {
    checked.push(reply.name)
    if (reply.name === 'b') registry.end(reply, 'failed')
  }))
  for (const reply of replies) registry.add(reply)
  registry.watchUnfinished(40)
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(checked.slice(0, 3), ['a', 'b', 'c'], 'the first sweep went on past the reply that ended')
  t.same(checked.slice(3, 5), ['a', 'c'], 'the next one without it')
  t.same(listed(registry), ['a', 'c'])
  registry.close(0, 0, () => {})
})
