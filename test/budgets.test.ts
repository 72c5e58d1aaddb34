// Budgets beside the watchdog: idleTimeout (a reply's silence), deadlineHeader (the remaining
// time travels upstream, an incoming one shortens the watchdog), maxPending (overload shedding).
import diagnostics from 'node:diagnostics_channel'
import Fastify from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncReply } from '../plugin/index.js'
import { OVERLOADED } from './helpers/answers.js'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { fetchText } from './helpers/routes.js'
import { request, sendOnly, sleep, waitFor } from './helpers/client.js'
import { H2C, h2get, h2session } from './helpers/h2.js'
import type { Teardown } from './helpers/context.js'
import { upstreamFor, type Upstream } from './helpers/upstream.js'

function codeOf (body: string): unknown {
  return (JSON.parse(body) as { code?: unknown }).code
}

/** An upstream answering `ok` that keeps the x-request-timeout-ms header of each request. */
async function deadlineUpstream (t: Teardown): Promise<{ up: Upstream, seen: Array<string | string[] | undefined> }> {
  const seen: Array<string | string[] | undefined> = []
  const up = await upstreamFor(t, (req, res) => {
    seen.push(req.headers['x-request-timeout-ms'])
    res.end('ok')
  })
  return { up, seen }
}

t.test('idleTimeout: a silent reply ends with 504 FST_ASYNC_ROUTE_IDLE_TIMEOUT, counted timedOut, published, with a hang report', async (t) => {
  const published: unknown[] = []
  const listener = (message: unknown): void => { published.push(message) }
  diagnostics.subscribe('fastify-async-route:timeout', listener)
  t.teardown(() => diagnostics.unsubscribe('fastify-async-route:timeout', listener))
  let aborted: unknown
  const { url, app, logs } = await startApp(t, { idleTimeout: 100, timeout: 0 }, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) { reply.signal.addEventListener('abort', () => { aborted = reply.signal.reason }) }
    })
  })
  const started = Date.now()
  const res = await request(`${url}/`)
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 504)
  t.same(JSON.parse(res.body), {
    statusCode: 504,
    code: 'FST_ASYNC_ROUTE_IDLE_TIMEOUT',
    error: 'Gateway Timeout',
    message: JSON.parse(res.body).message
  })
  t.ok(elapsed >= 90 && elapsed < 1500, `after about idleTimeout (${elapsed} ms)`)
  t.match(app.asyncRoute.stats(), { timedOut: 1, pending: 0 })
  t.equal(published.length, 1, 'the timeout channel published it')
  t.match(published[0], { code: 'FST_ASYNC_ROUTE_IDLE_TIMEOUT' }, 'as an idle timeout')
  const [warning] = logsAt(logs, LEVEL.warn, 'idleTimeout')
  t.match(warning, { report: { method: 'GET', url: '/', headersSent: false, inflight: [] } })
  t.match(aborted, { code: 'FST_ASYNC_ROUTE_IDLE_TIMEOUT' }, 'signal aborted')
})

t.test('idleTimeout after the head was sent cuts the stream; writes and flushes keep it alive', async (t) => {
  const { url } = await startApp(t, { idleTimeout: 120, timeout: 0 }, (app) => {
    asyncGet(app, '/silent', {
      handler (_request, reply) { reply.write('first chunk') }
    })
    asyncGet(app, '/alive', {
      handler (_request, reply) {
        let n = 0
        const timer = setInterval(() => {
          n++
          if (n % 2 === 0) void reply.flush()
          else reply.write(`${n},`)
          if (n === 12) reply.finish('done')
        }, 40)
        reply.onEnd(() => clearInterval(timer))
      }
    })
  })
  const silent = await request(`${url}/silent`)
  t.equal(silent.statusCode, 200)
  t.equal(silent.complete, false, 'the silent stream was cut')
  t.equal(silent.body, 'first chunk')
  const alive = await request(`${url}/alive`)
  t.equal(alive.complete, true, `a stream with a sign of life every 40 ms outlived idleTimeout (${alive.body})`)
  t.match(alive.body, /done$/)
})

t.test('idleTimeout after the head on HTTP/2 resets only the silent stream; the session serves on', async (t) => {
  const { url } = await startApp(t, { idleTimeout: 120, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/silent', handler (_request, reply) { reply.write('first chunk') } })
    app.asyncRoute({ method: 'GET', url: '/ok', handler (_request, reply) { reply.finish('ok') } })
  }, H2C)
  const session = h2session(t, url)
  const started = Date.now()
  const silent = await h2get(session, '/silent')
  t.equal(silent.status, 200)
  t.equal(silent.body, 'first chunk')
  t.not(silent.rstCode, 0, `the silent stream was reset (RST_STREAM ${silent.rstCode})`)
  t.ok(Date.now() - started >= 100, 'not before idleTimeout')
  const ok = await h2get(session, '/ok')
  t.equal(ok.status, 200)
  t.equal(ok.body, 'ok', 'the same session still answers')
})

t.test('idleTimeout: upstream heads and chunks are signs of life, a request merely in flight is not', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    if (req.url === '/never') return
    let n = 0
    const timer = setInterval(() => {
      res.write(`${++n};`)
      if (n === 8) {
        clearInterval(timer)
        res.end()
      }
    }, 40)
    res.on('close', () => clearInterval(timer))
  })
  const { url } = await startApp(t, { idleTimeout: 150, timeout: 5000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/pipe', handler (_request, reply) { return reply.pipe(`${up.origin}/trickle`) } })
    asyncGet(app, '/fetch', fetchText(`${up.origin}/trickle`))
    app.asyncRoute({ method: 'GET', url: '/never', async handler (_request, reply) { await reply.fetch(`${up.origin}/never`) } })
  })
  const piped = await request(`${url}/pipe`)
  t.equal(piped.body, '1;2;3;4;5;6;7;8;', 'pipe(url): 320 ms of chunks 40 ms apart')
  t.equal(piped.complete, true)
  t.equal((await request(`${url}/fetch`)).body, '1;2;3;4;5;6;7;8;', 'fetch: chunks the handler reads')
  const started = Date.now()
  const never = await request(`${url}/never`)
  t.equal(never.statusCode, 504)
  t.equal(codeOf(never.body), 'FST_ASYNC_ROUTE_IDLE_TIMEOUT', 'in flight, silent: idle')
  t.ok(Date.now() - started < 2000)
})

t.test('idleTimeout: the handler settling and an upstream request ending are signs of life', async (t) => {
  // idleTimeout 600 ms; each reply is silent for 400 ms, shows its sign of life, then finishes
  // 400 ms later (800 ms in all). Counted, the sign moves the idle deadline to 1,000 ms and the
  // reply finishes; not counted, the reply would end with 504 at 600 ms. (200 ms either way.)
  const up = await upstreamFor(t, () => {}) // never answers
  const { url } = await startApp(t, { idleTimeout: 600, timeout: 5000 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/settles',
      async handler (_request, reply) {
        await sleep(400)
        setTimeout(() => reply.finish('finished'), 400)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/cancelled',
      handler (_request, reply) {
        // The upstream request ends (cancelled by its own signal) at 400 ms.
        reply.fetch(`${up.origin}/never`, { signal: AbortSignal.timeout(400) }).catch(() => {
          setTimeout(() => reply.finish('finished'), 400)
        })
      }
    })
  })
  for (const path of ['/settles', '/cancelled']) {
    const started = Date.now()
    const answer = await request(`${url}${path}`)
    t.equal(answer.statusCode, 200, `${path}: ${answer.body}`)
    t.equal(answer.body, 'finished')
    t.ok(Date.now() - started >= 750, `${path}: silent for longer than idleTimeout in all`)
  }
})

t.test("a route's idleTimeout overrides the plugin's (0 turns it off); setTimeout() changes only the watchdog", async (t) => {
  const { url } = await startApp(t, { idleTimeout: 80, timeout: 5000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/off', idleTimeout: 0, handler (_request, reply) { setTimeout(() => reply.finish('late'), 250) } })
    app.asyncRoute({ method: 'GET', url: '/longer', idleTimeout: 400, handler (_request, reply) { setTimeout(() => reply.finish('late'), 250) } })
    app.asyncRoute({ method: 'GET', url: '/rearmed', handler (_request, reply) { reply.setTimeout(10_000) } })
  })
  t.equal((await request(`${url}/off`)).body, 'late')
  t.equal((await request(`${url}/longer`)).body, 'late')
  const rearmed = await request(`${url}/rearmed`)
  t.equal(codeOf(rearmed.body), 'FST_ASYNC_ROUTE_IDLE_TIMEOUT')
})

t.test("idleTimeout runs the route's onWatchdog, which may answer; signal still aborts", async (t) => {
  let reason: unknown
  const { url, app } = await startApp(t, { idleTimeout: 60, timeout: 0 }, (app) => {
    asyncGet(app, '/', {
      onWatchdog (_request, reply, report) { reply.finish({ quiet: report.elapsedMs >= 50 }) },
      handler (_request, reply) { reply.signal.addEventListener('abort', () => { reason = reply.signal.reason }) }
    })
  })
  const res = await request(`${url}/`)
  t.same(JSON.parse(res.body), { quiet: true })
  t.match(reason, { code: 'FST_ASYNC_ROUTE_IDLE_TIMEOUT' })
  t.match(app.asyncRoute.stats(), { timedOut: 1 })
})

t.test('deadlineHeader: every upstream request carries the remaining watchdog time, replacing a header of that name', async (t) => {
  const { up, seen } = await deadlineUpstream(t)
  const { url } = await startApp(t, { timeout: 1000, deadlineHeader: 'X-Request-Timeout-Ms' }, (app) => {
    asyncGet(app, '/', {
      upstream: up.url,
      async handler (_request, reply, first) {
        await first.body.dump()
        await sleep(200)
        await (await reply.fetch(up.url, { headers: { 'X-REQUEST-TIMEOUT-MS': '999999' } })).body.dump()
        await reply.pipe(up.url, { headers: ['x-request-timeout-ms', '999999', 'x-other', '1'] })
      }
    })
  })
  t.equal((await request(`${url}/`)).body, 'ok')
  t.equal(seen.length, 3)
  for (const value of seen) t.match(value, /^\d+$/, `one value, whole ms (${String(value)})`)
  const [first, second, third] = seen.map(Number) as [number, number, number]
  t.ok(first <= 1000 && first > 700, `the upstream step: nearly the whole budget (${first})`)
  t.ok(second <= 800 && second >= 1, `fetch after 200 ms: less (${second})`)
  t.ok(third <= second, `pipe after that: no more (${third})`)
})

t.test('deadlineHeader: forward() with a streamed body carries the time left of a budget the client shortened', async (t) => {
  const seen: Array<{ deadline: string | string[] | undefined, bytes: number }> = []
  const up = await upstreamFor(t, (req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length })
    req.on('end', () => {
      seen.push({ deadline: req.headers['x-request-timeout-ms'], bytes })
      res.end(String(bytes))
    })
  })
  const { url } = await startApp(t, { timeout: 1000, deadlineHeader: 'x-request-timeout-ms' }, (app) => {
    app.addContentTypeParser('application/octet-stream', (_request, payload, done) => { done(null, payload) })
    app.asyncRoute({ method: 'POST', url: '/', handler (_request, reply) { void reply.forward(up.url) } })
  })
  const body = 'x'.repeat(100_000)
  const res = await request(`${url}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'x-request-timeout-ms': '400' },
    body
  })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '100000', 'the streamed body arrived whole')
  t.equal(seen.length, 1)
  const value = seen[0]?.deadline
  t.match(value, /^\d+$/, `one value, whole ms (${String(value)})`)
  t.ok(Number(value) <= 400 && Number(value) > 100, `the client's 400 ms budget, less what passed, not the route's 1000 (${String(value)})`)
})

t.test('deadlineHeader: an incoming value shortens the watchdog, never lengthens it; other values are ignored', async (t) => {
  const { up, seen } = await deadlineUpstream(t)
  const { url } = await startApp(t, { timeout: 3000, deadlineHeader: 'x-request-timeout-ms' }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/hang', handler () {} })
    app.asyncRoute({ method: 'GET', url: '/short', timeout: 100, handler () {} })
    app.asyncRoute({ method: 'GET', url: '/off', timeout: 0, handler () {} })
    app.asyncRoute({ method: 'GET', url: '/free', timeout: 0, handler (_request, reply) { return reply.pipe(up.url) } })
  })
  const timed = async (path: string, value?: string): Promise<[number, number]> => {
    const started = Date.now()
    const res = await request(`${url}${path}`, { headers: value === undefined ? {} : { 'x-request-timeout-ms': value }, timeout: 8000 })
    return [res.statusCode, Date.now() - started]
  }
  const [shortened, shortMs] = await timed('/hang', '150')
  t.equal(shortened, 504)
  t.ok(shortMs < 1500, `150 shortens 3000 (${shortMs} ms)`)
  const [kept, keptMs] = await timed('/short', '5000')
  t.equal(kept, 504)
  t.ok(keptMs < 1500, `5000 never lengthens 100 (${keptMs} ms)`)
  const [alone, aloneMs] = await timed('/off', '150')
  t.equal(alone, 504)
  t.ok(aloneMs < 1500, `with the watchdog off, the incoming value alone (${aloneMs} ms)`)
  for (const value of ['0', 'abc', '-5', '1.5', '2147483648', '99999999999']) {
    const [status, ms] = await timed('/short', value)
    t.equal(status, 504)
    t.ok(ms < 1500, `${value}: ignored, the route's 100 ms apply`)
  }
  t.equal((await request(`${url}/free`)).body, 'ok')
  t.same(seen, [undefined], 'no deadline travels while the watchdog is off')
})

t.test('maxPending: beyond the limit, 503 FST_ASYNC_ROUTE_OVERLOADED at once with retry-after: 1, before the handler, counted as rejected', async (t) => {
  const held: AsyncReply[] = []
  let calls = 0
  const { url, app, logs } = await startApp(t, { maxPending: 2, timeout: 0 }, (app) => {
    app.addHook('onRequest', async (_request, reply) => { reply.header('x-request-id', 'abc') })
    app.asyncRoute({ method: 'GET', url: '/', handler (_request, reply) { calls++; held.push(reply) } })
  })
  const first = request(`${url}/`)
  const second = request(`${url}/`)
  await waitFor(() => held.length === 2, 2000, 'two pending replies')
  const started = Date.now()
  const third = await request(`${url}/`)
  t.ok(Date.now() - started < 1000, 'answered at once')
  t.equal(third.statusCode, 503)
  t.equal(third.headers['retry-after'], '1')
  t.equal(third.headers['x-request-id'], 'abc', 'its hooks ran; their headers are kept')
  t.same(JSON.parse(third.body), OVERLOADED)
  t.equal(calls, 2, 'its handler never ran')
  t.equal(app.asyncRoute.pending().length, 2, 'never in pending()')
  t.match(app.asyncRoute.stats(), { started: 2, rejected: 1, pending: 2 })
  t.equal(logsAt(logs, LEVEL.warn, 'overloaded').length, 1, 'logged at warn')
  t.equal(logs.filter((line) => line.level >= LEVEL.error).length, 0, 'not at error')
  for (const reply of held) reply.finish('ok')
  t.equal((await first).body, 'ok')
  t.equal((await second).body, 'ok')
  const again = request(`${url}/`)
  await waitFor(() => held.length === 3, 2000, 'a new request to be accepted again')
  held[2]?.finish('done')
  const answer = await again
  t.equal(answer.statusCode, 200, 'accepted again once the others finished')
  t.equal(answer.body, 'done')
})

t.test("a route's maxPending is checked in addition to the plugin's", async (t) => {
  const held: AsyncReply[] = []
  const { url, app } = await startApp(t, { maxPending: 10, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/one', maxPending: 1, handler (_request, reply) { held.push(reply) } })
    app.asyncRoute({ method: 'GET', url: '/other', handler (_request, reply) { held.push(reply) } })
  })
  const first = request(`${url}/one`)
  await waitFor(() => held.length === 1, 2000, 'the first reply')
  const second = await request(`${url}/one`)
  t.equal(second.statusCode, 503)
  t.equal(codeOf(second.body), 'FST_ASYNC_ROUTE_OVERLOADED')
  const other = request(`${url}/other`)
  await waitFor(() => held.length === 2, 2000, 'the other route is not limited')
  for (const reply of held) reply.finish('ok')
  t.equal((await first).body, 'ok')
  t.equal((await other).body, 'ok')
  const again = request(`${url}/one`)
  await waitFor(() => held.length === 3, 2000, 'the route accepts again once its reply ended')
  held[2]?.finish('again')
  t.equal((await again).body, 'again')
  t.match(app.asyncRoute.stats(), { started: 3, finished: 3, rejected: 1 })
})

t.test('a burst above maxPending: every request gets its documented outcome, rejected is exact', async (t) => {
  const { url, app } = await startApp(t, { maxPending: 5, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler (_request, reply) { setTimeout(() => reply.finish('ok'), 150) } })
  })
  const results = await Promise.all(Array.from({ length: 20 }, async () => await request(`${url}/`, { timeout: 5000 })))
  const ok = results.filter((res) => res.statusCode === 200 && res.body === 'ok').length
  const shed = results.filter((res) => res.statusCode === 503 && codeOf(res.body) === 'FST_ASYNC_ROUTE_OVERLOADED').length
  t.equal(ok + shed, 20, 'every answer is one or the other')
  t.ok(ok >= 5, `at least maxPending were served (${ok})`)
  const stats = app.asyncRoute.stats()
  t.equal(stats.rejected, shed, 'rejected counts exactly the 503s')
  t.equal(stats.started, ok)
})

t.test('budget options are checked at register and asyncRoute()', async (t) => {
  for (const [options, name] of [
    [{ idleTimeout: -1 }, 'idleTimeout'],
    [{ idleTimeout: 1.5 }, 'idleTimeout'],
    [{ maxPending: -1 }, 'maxPending'],
    [{ maxPending: '5' }, 'maxPending'],
    [{ deadlineHeader: 'bad header' }, 'deadlineHeader'],
    [{ deadlineHeader: 42 }, 'deadlineHeader'],
    [{ deadlineHeader: '' }, 'deadlineHeader']
  ] as const) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(asyncRoute, options as never) }, { name: 'TypeError', code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: new RegExp(`"${name}"`) }, JSON.stringify(options))
    await app.close()
  }
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute)
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/a', idleTimeout: -5, handler () {} }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /"idleTimeout"/ })
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/b', maxPending: 2.5, handler () {} }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /"maxPending"/ })
})

t.test('a client that leaves while waiting frees its maxPending slot', async (t) => {
  const { url, app } = await startApp(t, { maxPending: 1, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', maxPending: 1, handler () {} })
  })
  const req = await sendOnly(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'pending')
  req.destroy()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'aborted')
  const next = await sendOnly(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().started === 2, 2000, 'the next one accepted')
  next.destroy()
  t.match(app.asyncRoute.stats(), { rejected: 0 })
})

t.test('deadlineHeader with headers given as a list of pairs or a flat list with repeated names', async (t) => {
  const seen: Array<Record<string, unknown>> = []
  const up = await upstreamFor(t, (req, res) => {
    seen.push({ deadline: req.headers['x-deadline'], a: req.headers['x-a'] })
    res.end('ok')
  })
  const { url } = await startApp(t, { timeout: 1000, deadlineHeader: 'x-deadline' }, (app) => {
    asyncGet(app, '/', {
      async handler (_request, reply) {
        await (await reply.fetch(up.url, { headers: new Map([['x-a', '1'], ['X-Deadline', '5']]) as unknown as Record<string, string> })).body.dump()
        await reply.pipe(up.url, { headers: ['x-a', '1', 'x-a', '2'] })
      }
    })
  })
  t.equal((await request(`${url}/`)).body, 'ok')
  t.match(seen, [{ deadline: /^\d+$/, a: '1' }, { deadline: /^\d+$/, a: '1, 2' }])
  t.not(seen[0]?.deadline, '5', 'the given value was replaced')
})

t.test('an overload answer whose head Node refuses (a bad header set by a hook) cuts the connection instead of throwing', async (t) => {
  const held: AsyncReply[] = []
  const { url, logs } = await startApp(t, { maxPending: 1, timeout: 0 }, (app) => {
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-break'] !== undefined) reply.header('x-bad', 'a\nb')
    })
    app.asyncRoute({ method: 'GET', url: '/', handler (_request, reply) { held.push(reply) } })
  })
  const first = request(`${url}/`)
  await waitFor(() => held.length === 1, 2000, 'the first reply')
  await t.rejects(request(`${url}/`, { headers: { 'x-break': '1' } }), 'the socket was cut')
  t.equal(logsAt(logs, LEVEL.error, 'overload answer could not be sent').length, 1)
  held[0]?.finish('ok')
  t.equal((await first).body, 'ok')
})

t.test('deadlineHeader: a retried request carries the time left at its own start', async (t) => {
  const seen: number[] = []
  const up = await upstreamFor(t, (req, res) => {
    seen.push(Number(req.headers['x-deadline']))
    if (seen.length % 2 === 1) {
      res.statusCode = 503
      res.end('busy')
    } else {
      res.end('ok')
    }
  })
  const { url } = await startApp(t, { timeout: 2000, deadlineHeader: 'x-deadline', retry: { attempts: 2, minDelay: 150, maxDelay: 150 } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/pipe', handler (_request, reply) { return reply.pipe(up.url) } })
    asyncGet(app, '/fetch', fetchText(up.url))
  })
  t.equal((await request(`${url}/pipe`)).body, 'ok')
  t.equal((await request(`${url}/fetch`)).body, 'ok')
  t.equal(seen.length, 4)
  t.ok((seen[0] as number) - (seen[1] as number) >= 100, `pipe: the retry sent less time (${seen[0]} then ${seen[1]})`)
  t.ok((seen[2] as number) - (seen[3] as number) >= 100, `fetch: the retry sent less time (${seen[2]} then ${seen[3]})`)
})
