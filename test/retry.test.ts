// The retry policy: plugin, route and call levels (field by field), what is retried (idempotent
// methods, replayable bodies, retryable statuses and errors, never once any of the answer
// reached the handler or the client), the last answer relayed when tries run out, waits bounded
// by the watchdog and ended with the reply, and shown in flight meanwhile. Real upstreams and
// clients; the key cases with the plugin's own agent and with undici 7 and 8 dispatchers. The
// delays' arithmetic alone is in test/unit/retry-policy.test.ts.
import type { IncomingMessage, ServerResponse } from 'node:http'
import Fastify from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncReply, type RetryPolicy, type UpstreamResponse } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { openRequest, request, sendOnly, sleep, waitFor } from './helpers/client.js'
import { dispatcherKinds } from './helpers/dispatchers.js'
import { readBody, refusedOrigin, upstreamFor, type Upstream } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]
type Step = (req: IncomingMessage, res: ServerResponse) => void

/** An upstream that answers its n-th request with `steps[n]` (the last step repeats), recording when each came. */
async function scripted (t: Test, steps: Step[]): Promise<Upstream & { times: number[], bodies: string[] }> {
  const times: number[] = []
  const bodies: string[] = []
  const upstream = await upstreamFor(t, (req, res) => {
    const step = steps[Math.min(times.length, steps.length - 1)] as Step
    times.push(Date.now())
    void readBody(req).then((body) => {
      bodies.push(body)
      step(req, res)
    })
  })
  return Object.assign(upstream, { times, bodies })
}

const answer = (status: number, body: string, headers: Record<string, string> = {}): Step => (_req, res) => {
  res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(body)
}
const reset: Step = (req) => { req.socket.destroy() }
const FAST: RetryPolicy = { minDelay: 0, maxDelay: 0 }

/** The ways to make an upstream request that take a retry policy. */
const CALLS: Array<{ name: string, run: (reply: AsyncReply, url: string, retry?: RetryPolicy) => Promise<void> }> = [
  {
    name: 'fetch',
    run: async (reply, url, retry) => {
      const res = await reply.fetch(url, retry === undefined ? undefined : { retry })
      reply.status(res.statusCode).finish(await res.body.text())
    }
  },
  { name: 'pipe(url)', run: (reply, url, retry) => reply.pipe(url, retry === undefined ? undefined : { retry }) },
  { name: 'pipe({ url, retry })', run: (reply, url, retry) => reply.pipe({ url, retry }) },
  { name: 'pipe(url) through fetch (a signal)', run: (reply, url, retry) => reply.pipe(url, { retry, signal: new AbortController().signal } as object) },
  { name: 'forward', run: (reply, url, retry) => reply.forward(url, retry === undefined ? undefined : { retry }) }
]

const KEY_KINDS = new Set(["the plugin's own Agent", 'undici 7 Agent', 'undici 8 Agent'])
const kinds = (await dispatcherKinds()).filter((kind) => KEY_KINDS.has(kind.name))

for (const kind of kinds) {
  for (const call of CALLS) {
    t.test(`${kind.name}, ${call.name}: 503 and a reset are retried; the answer of the last try is relayed`, async (t) => {
      const upstream = await scripted(t, [answer(503, 'busy'), reset, answer(200, 'fine', { 'x-try': '3' })])
      const built = await kind.build(upstream.origin)
      t.teardown(built.close)
      const { url } = await startApp(t, { dispatcher: built.dispatcher, retry: { attempts: 3, ...FAST } }, (app) => {
        app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => call.run(reply, `${built.origin}/r`) })
      })
      const res = await request(`${url}/`)
      t.equal(res.statusCode, 200)
      t.equal(res.body, 'fine')
      t.equal(upstream.times.length, 3, 'three tries')
    })

    t.test(`${kind.name}, ${call.name}: tries used up on a retryable status: that last answer as it is`, async (t) => {
      const upstream = await scripted(t, [answer(502, 'first'), answer(503, 'last', { 'x-last': 'yes' })])
      const built = await kind.build(upstream.origin)
      t.teardown(built.close)
      const { url } = await startApp(t, { dispatcher: built.dispatcher }, (app) => {
        app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => call.run(reply, `${built.origin}/r`, { attempts: 2, ...FAST }) })
      })
      const res = await request(`${url}/`)
      t.equal(res.statusCode, 503)
      t.equal(res.body, 'last')
      if (call.name !== 'fetch') t.equal(res.headers['x-last'], 'yes')
      t.equal(upstream.times.length, 2)
    })
  }
}

t.test('tries used up on an error: the usual 502, or 504 for a headers timeout', async (t) => {
  const refused = await refusedOrigin()
  const upstream = await scripted(t, [() => {}])
  const { url } = await startApp(t, { retry: { attempts: 3, ...FAST } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/refused', handler: (_request, reply) => reply.pipe(`${refused}/`) })
    app.asyncRoute({ method: 'GET', url: '/stall', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`, { headersTimeout: 50 }) })
  })
  const refusedRes = await request(`${url}/refused`)
  t.equal(refusedRes.statusCode, 502)
  t.equal(JSON.parse(refusedRes.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
  const stalled = await request(`${url}/stall`)
  t.equal(stalled.statusCode, 504)
  t.equal(JSON.parse(stalled.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT')
  t.equal(upstream.times.length, 3, 'a headers timeout is retried (three tries)')
})

t.test('the default policy never retries', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy'), answer(200, 'fine')])
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
  })
  t.equal((await request(`${url}/`)).statusCode, 503)
  t.equal(upstream.times.length, 1)
})

t.test('only idempotent methods by default; others when listed; never a streamed body', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy')])
  const { url } = await startApp(t, { retry: { attempts: 2, ...FAST } }, (app) => {
    app.asyncRoute({ method: 'POST', url: '/post', handler: (_request, reply) => reply.forward(`${upstream.origin}/`) })
    app.asyncRoute({
      method: 'POST',
      url: '/post-listed',
      retry: { methods: ['post'] },
      handler: (_request, reply) => reply.forward(`${upstream.origin}/`)
    })
    app.register(async (scope) => {
      scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
      scope.asyncRoute({ method: 'PUT', url: '/stream', handler: (_request, reply) => reply.forward(`${upstream.origin}/`) })
    })
    app.asyncRoute({ method: 'PUT', url: '/put', handler: (_request, reply) => reply.forward(`${upstream.origin}/`) })
  })
  const json = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' }
  t.equal((await request(`${url}/post`, json)).statusCode, 503)
  t.equal(upstream.times.length, 1, 'POST: not retried')
  t.equal((await request(`${url}/post-listed`, json)).statusCode, 503)
  t.equal(upstream.times.length, 3, 'POST listed in methods: retried, the same body each time')
  t.same(upstream.bodies.slice(1), ['{"a":1}', '{"a":1}'])
  t.equal((await request(`${url}/stream`, { method: 'PUT', headers: { 'content-type': 'application/x-stream' }, body: 'streamed' })).statusCode, 503)
  t.equal(upstream.times.length, 4, 'a streamed body: not retried')
  t.equal(upstream.bodies[3], 'streamed')
  t.equal((await request(`${url}/put`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'parsed' })).statusCode, 503)
  t.equal(upstream.times.length, 6, 'PUT with a parsed body: retried')
})

t.test('never once any of the answer reached the client or the handler', async (t) => {
  // A 200 head, part of the body, then a reset: not retried, the client connection is cut.
  const upstream = await scripted(t, [(_req, res) => {
    res.writeHead(200, { 'content-length': '100' })
    res.write('partial', () => res.socket?.destroy())
  }])
  const { url } = await startApp(t, { retry: { attempts: 3, ...FAST, statusCodes: [200, 503] } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/pipe', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`, { retry: { statusCodes: [503] } }) })
    asyncGet(app, '/fetch', {
      async handler (_request, reply) {
        const res = await reply.fetch(`${upstream.origin}/`, { retry: { statusCodes: [503] } })
        try {
          await res.body.text()
          reply.finish('whole')
        } catch {
          reply.finish('body failed')
        }
      }
    })
  })
  const piped = await request(`${url}/pipe`)
  t.equal(piped.statusCode, 200)
  t.equal(piped.complete, false, 'cut, not retried')
  t.equal(upstream.times.length, 1)
  const fetched = await request(`${url}/fetch`)
  t.equal(fetched.body, 'body failed', 'the handler sees the body error')
  t.equal(upstream.times.length, 2, 'one try')
})

t.test('a status outside statusCodes, or an error outside errorCodes, is not retried', async (t) => {
  const upstream = await scripted(t, [answer(500, 'broken')])
  const refused = await refusedOrigin()
  const { url } = await startApp(t, { retry: { attempts: 3, ...FAST } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/500', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
    asyncGet(app, '/refused', {
      handler: (_request, reply) => reply.pipe(`${refused}/`, { retry: { errorCodes: ['ECONNRESET'], minDelay: 200, maxDelay: 200 } })
    })
  })
  t.equal((await request(`${url}/500`)).statusCode, 500)
  t.equal(upstream.times.length, 1)
  const started = Date.now()
  t.equal((await request(`${url}/refused`)).statusCode, 502)
  t.ok(Date.now() - started < 150, 'no wait: ECONNREFUSED is not listed')
})

t.test('levels replace field by field: plugin, route, call, and the upstream request object', async (t) => {
  const upstream = await scripted(t, [answer(500, 'a'), answer(500, 'b'), answer(500, 'c'), answer(200, 'ok')])
  const { url } = await startApp(t, { retry: { attempts: 4, minDelay: 0, maxDelay: 0 } }, (app) => {
    // The route lists 500; attempts stays the plugin's 4.
    app.asyncRoute({ method: 'GET', url: '/route', retry: { statusCodes: [500] }, handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
    // The call lowers attempts to 2; statusCodes stays the route's.
    asyncGet(app, '/call', {
      retry: { statusCodes: [500] },
      handler: (_request, reply) => reply.pipe(`${upstream.origin}/`, { retry: { attempts: 2 } })
    })
    asyncGet(app, '/upstream', {
      upstream: () => ({ url: `${upstream.origin}/`, retry: { statusCodes: [500], attempts: 2 } }),
      handler (_request, reply, res) { return reply.pipe(res) }
    })
  })
  t.equal((await request(`${url}/route`)).body, 'ok')
  t.equal(upstream.times.length, 4)
  upstream.times.length = 0
  const call = await request(`${url}/call`)
  t.equal(call.statusCode, 500, 'two tries, then the last answer')
  t.equal(upstream.times.length, 2)
  upstream.times.length = 0
  t.equal((await request(`${url}/upstream`)).statusCode, 500)
  t.equal(upstream.times.length, 2)
})

t.test('retry-after is honoured over real sockets', async (t) => {
  const upstream = await scripted(t, [answer(503, 'later', { 'retry-after': '1' }), answer(200, 'now')])
  const { url } = await startApp(t, { retry: { attempts: 2, ...FAST } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
  })
  t.equal((await request(`${url}/`)).body, 'now')
  const waited = (upstream.times[1] as number) - (upstream.times[0] as number)
  t.ok(waited >= 950, `waited ${waited} ms`)
})

t.test('no try that would start after the watchdog: the last answer is relayed at once', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy', { 'retry-after': '5' }), answer(502, 'bad gateway'), answer(200, 'fine')])
  const { url } = await startApp(t, { timeout: 1000, retry: { attempts: 3 } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/after', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
    asyncGet(app, '/fetch-after', {
      async handler (_request, reply) {
        const res = await reply.fetch(`${upstream.origin}/`, { retry: { minDelay: 2000, maxDelay: 2000 } })
        reply.status(res.statusCode).finish(await res.body.text())
      }
    })
  })
  const started = Date.now()
  const res = await request(`${url}/after`)
  t.equal(res.statusCode, 503, 'retry-after: 5 would start after the 1 s watchdog')
  t.equal(res.body, 'busy')
  t.ok(Date.now() - started < 800, 'relayed at once')
  const fetched = await request(`${url}/fetch-after`)
  t.equal(fetched.statusCode, 502, 'a 2 s backoff would start after the watchdog')
  t.equal(upstream.times.length, 2)
})

t.test('waiting for the next try: shown in flight; a watchdog re-armed shorter ends the reply with its 504', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy'), answer(200, 'fine')])
  const { url, app, logs } = await startApp(t, { timeout: 5000, retry: { attempts: 2, minDelay: 400, maxDelay: 400 } }, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) {
        setTimeout(() => reply.setTimeout(100), 100)
        return reply.pipe(`${upstream.origin}/slow`)
      }
    })
  })
  const answered = request(`${url}/`)
  await waitFor(() => upstream.times.length === 1, 2000, 'the first try')
  await sleep(60)
  const pending = app.asyncRoute.pending()
  t.equal(pending.length, 1)
  t.match(pending[0]?.inflight, [{ method: 'GET', url: `${upstream.origin}/slow`, ageMs: Number }], 'in flight while it waits')
  const res = await answered
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  const hang = logsAt(logs, LEVEL.warn, 'waiting on upstream')
  t.equal(hang.length, 1)
  t.match(hang[0]?.msg, `GET ${upstream.origin}/slow`, 'the hang report names the request that waits')
  await sleep(450)
  t.equal(upstream.times.length, 1, 'the next try never started')
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

t.test('a fetch waiting for its next try: the reply ending, or the caller signal, cancels it', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy')])
  const outcomes: string[] = []
  const { url, app } = await startApp(t, { retry: { attempts: 2, minDelay: 300, maxDelay: 300 } }, (app) => {
    asyncGet(app, '/finish', {
      handler (_request, reply) {
        reply.fetch(`${upstream.origin}/`).then(() => outcomes.push('resolved'), (error: { code: string }) => outcomes.push(error.code))
        setTimeout(() => reply.finish('done first'), 100)
      }
    })
    asyncGet(app, '/signal', {
      handler (_request, reply) {
        const controller = new AbortController()
        reply.fetch(`${upstream.origin}/`, { signal: controller.signal }).then(() => outcomes.push('resolved'), (error: Error) => {
          outcomes.push(error.message)
          reply.finish('caller gave up')
        })
        setTimeout(() => controller.abort(new Error('caller abort')), 100)
      }
    })
  })
  t.equal((await request(`${url}/finish`)).body, 'done first')
  t.equal((await request(`${url}/signal`)).body, 'caller gave up')
  await sleep(350)
  t.same(outcomes, ['FST_ASYNC_ROUTE_CANCELLED', 'caller abort'])
  t.equal(upstream.times.length, 2, 'no second try for either')
  t.equal(app.asyncRoute.stats().finished, 2)
})

t.test('a client that leaves, or close(), cancels a waiting retry', async (t) => {
  const upstream = await scripted(t, [answer(503, 'busy')])
  const { url, app } = await startApp(t, { closeGrace: 100, retry: { attempts: 2, minDelay: 500, maxDelay: 500 } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
    app.asyncRoute({ method: 'GET', url: '/forward', handler: (_request, reply) => reply.forward(`${upstream.origin}/`) })
    asyncGet(app, '/fetch', {
      async handler (_request, reply) { await reply.pipe(await reply.fetch(`${upstream.origin}/`)) }
    })
  })
  for (const path of ['/', '/forward', '/fetch']) {
    const before = upstream.times.length
    const client = await sendOnly(`${url}${path}`)
    await waitFor(() => upstream.times.length === before + 1, 2000, 'the first try')
    await sleep(50)
    client.destroy()
    await waitFor(() => app.asyncRoute.pending().length === 0, 2000, 'the reply to end')
  }
  t.equal(app.asyncRoute.stats().aborted, 3)
  const closing = request(`${url}/`)
  await waitFor(() => upstream.times.length === 4, 2000, 'the first try')
  await app.close()
  const res = await closing
  t.equal(res.statusCode, 503)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_CLOSING')
  await sleep(600)
  t.equal(upstream.times.length, 4, 'no second try after any of them')
})

t.test('pipe(url): a large retryable answer gives up its connection, the retry goes on; HEAD is retried', async (t) => {
  const big = Buffer.alloc(512 * 1024, 'x')
  const upstream = await scripted(t, [
    (_req, res) => { res.writeHead(503, { 'content-type': 'text/plain' }).end(big) },
    answer(200, 'small')
  ])
  const { url } = await startApp(t, { retry: { attempts: 2, ...FAST } }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/', handler: (_request, reply) => reply.pipe(`${upstream.origin}/`) })
  })
  t.equal((await request(`${url}/`)).body, 'small')
  upstream.times.length = 0
  const head = await request(`${url}/`, { method: 'HEAD' })
  t.equal(head.statusCode, 200, 'the 503 was not relayed')
  t.equal(upstream.times.length, 2, 'HEAD: retried too')
})

t.test('a handler that finishes while a pipe waits, or reads a retried answer: the retry stops', async (t) => {
  const upstream = await scripted(t, [(_req, res) => {
    res.writeHead(503)
    res.write('slow error body')
    setTimeout(() => res.end(), 200)
  }])
  // The answer takes 200 ms to read; the next try is due 400 ms after its head.
  const { url } = await startApp(t, { retry: { attempts: 2, minDelay: 400, maxDelay: 400 } }, (app) => {
    asyncGet(app, '/during-read', {
      handler (_request, reply) {
        void reply.pipe(`${upstream.origin}/`)
        setTimeout(() => reply.finish('finished while the answer was read'), 80)
      }
    })
    asyncGet(app, '/during-wait', {
      handler (_request, reply) {
        void reply.pipe(`${upstream.origin}/`)
        setTimeout(() => reply.finish('finished during the wait'), 300)
      }
    })
    asyncGet(app, '/fail-during-read', {
      handler (_request, reply) {
        void reply.pipe(`${upstream.origin}/`)
        setTimeout(() => reply.fail(new Error('given up')), 80)
      }
    })
  })
  t.equal((await request(`${url}/during-read`)).body, 'finished while the answer was read')
  t.equal((await request(`${url}/during-wait`)).body, 'finished during the wait')
  t.equal((await request(`${url}/fail-during-read`)).statusCode, 500)
  await sleep(600)
  t.equal(upstream.times.length, 3, 'no second try')
})

t.test('invalid policies: register rejects, asyncRoute() throws, a call throws; each names the option', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [5, /"retry" must be an object/],
    [null, /"retry" must be an object/],
    [[], /"retry" must be an object/],
    [{ attempts: 0 }, /"retry\.attempts" must be an integer from 1 to 10/],
    [{ attempts: 11 }, /retry\.attempts/],
    [{ attempts: 1.5 }, /retry\.attempts/],
    [{ minDelay: -1 }, /retry\.minDelay/],
    [{ maxDelay: 60_001 }, /retry\.maxDelay/],
    [{ minDelay: 300 }, /"retry\.minDelay" must be at most retry\.maxDelay \(250\)/],
    [{ methods: 'GET' }, /retry\.methods/],
    [{ methods: ['GET', 'NOT A METHOD'] }, /retry\.methods/],
    [{ statusCodes: [99] }, /retry\.statusCodes/],
    [{ statusCodes: ['503'] }, /retry\.statusCodes/],
    [{ errorCodes: [''] }, /retry\.errorCodes/],
    [{ attempt: 3 }, /"retry\.attempt" must be absent/]
  ]
  for (const [retry, message] of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(asyncRoute, { retry: retry as RetryPolicy }) }, { name: 'TypeError', code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message }, `register: ${JSON.stringify(retry)}`)
    await app.close()
  }
  const app = Fastify()
  await app.register(asyncRoute, { retry: { attempts: 2 } })
  for (const [retry, message] of bad) {
    t.throws(() => app.asyncRoute({ method: 'GET', url: '/', retry: retry as RetryPolicy, handler () {} }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message }, `route: ${JSON.stringify(retry)}`)
  }
  await app.close()
  const upstream = await upstreamFor(t)
  const thrown: Array<{ code: string, message: string }> = []
  const served = await startApp(t, {}, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) {
        for (const run of [
          () => reply.fetch(upstream.url, { retry: { attempts: 0 } }),
          () => reply.fetch(upstream.url, { retry: { attempts: 0 } }, () => {}),
          () => reply.pipe(upstream.url, { retry: { maxDelay: -1 } }),
          () => reply.pipe({ url: upstream.url, retry: { methods: [1] as unknown as string[] } }),
          () => reply.fetch(upstream.url, { retry: { methods: 'GET' as unknown as string[] } })
        ]) {
          try { void run() } catch (error) { thrown.push(error as { code: string, message: string }) }
        }
        reply.finish('ok')
      }
    })
    asyncGet(app, '/upstream', {
      upstream: () => ({ url: upstream.url, retry: { attempts: 99 } }),
      handler (_request, reply) { reply.finish('unexpected') }
    })
  })
  t.equal((await request(`${served.url}/`)).body, 'ok')
  t.equal(thrown.length, 5)
  for (const error of thrown) t.match(error, { code: 'FST_ASYNC_ROUTE_INVALID_ARGUMENT', message: /^reply\.(fetch|pipe)\(\): "retry\./ })
  t.match(thrown[3]?.message, /got \[1\]$/)
  t.match(thrown[4]?.message, /got "GET"$/)
  const viaUpstream = await request(`${served.url}/upstream`)
  t.equal(viaUpstream.statusCode, 500)
  t.equal(JSON.parse(viaUpstream.body).code, 'FST_ASYNC_ROUTE_INVALID_ARGUMENT')
  t.equal(upstream.connections(), 0)
})

t.test('a retried fetch reports a late answer after its reply ended as cancelled', async (t) => {
  // The reply ends (watchdog) while the retried try's head is on its way.
  const upstream = await scripted(t, [answer(503, 'busy'), (_req, res) => setTimeout(() => answer(200, 'late')(_req, res), 150)])
  const seen: string[] = []
  const { url } = await startApp(t, { timeout: 100, retry: { attempts: 2, ...FAST } }, (app) => {
    asyncGet(app, '/', {
      handler (_request, reply) {
        reply.fetch(`${upstream.origin}/`).then((res: UpstreamResponse) => seen.push(String(res.statusCode)), (error: { code: string }) => seen.push(error.code))
      }
    })
  })
  t.equal((await request(`${url}/`)).statusCode, 504)
  await waitFor(() => seen.length === 1, 2000, 'the fetch to settle')
  t.same(seen, ['FST_ASYNC_ROUTE_CANCELLED'])
  const { res } = await openRequest(`${url}/`)
  res.resume()
})
