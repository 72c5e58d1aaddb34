// The watchdog: what a client sees when a reply is never finished, the hang report in the logs,
// re-arming with reply.setTimeout(), onTimeout, and many hung replies at once.
import type { IncomingMessage } from 'node:http'
import t from 'tap'
import type { AsyncReply, HangReport } from '../plugin/index.js'
import { asyncGet, collectUncaught, LEVEL, logsAt, startApp, startRoute, type LogLine } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { socketClosed, startUpstream, type Upstream } from './helpers/upstream.js'
import { captureLogs } from './helpers/logs.js'

/** An upstream that accepts requests and never answers them. */
async function stalledUpstream (test: Parameters<typeof startApp>[0]): Promise<Upstream> {
  const upstream = await startUpstream(() => {})
  test.teardown(() => upstream.close())
  return upstream
}

function hangReports (logs: LogLine[]): LogLine[] {
  return logs.filter((line) => line.level === LEVEL.warn && line.report !== undefined)
}

t.test('watchdog answers 504 FST_ASYNC_ROUTE_TIMEOUT when the head was not sent', async (t) => {
  const { url, app } = await startApp(t, { timeout: 100 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/hang', handler () {} })
  })
  const started = Date.now()
  const res = await request(`${url}/hang`)
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 504)
  t.ok(res.complete, 'the 504 is a whole response')
  t.match(res.headers['content-type'], /^application\/json/)
  const body = JSON.parse(res.body)
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'])
  t.equal(body.statusCode, 504)
  t.equal(body.code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.equal(body.error, 'Gateway Timeout')
  t.match(body.message, /not finished within \d+ ms/)
  t.ok(elapsed >= 90, `answered after the timeout (${elapsed} ms)`)
  t.ok(elapsed < 3000, `answered soon after the timeout (${elapsed} ms)`)
  t.same(app.asyncRoute.pending(), [])
})

t.test('watchdog cuts a response whose head was already sent: the client sees it truncated', async (t) => {
  const { url, logs } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/stream', {
      handler (request, reply) {
        reply.write('partial')
      }
    })
  })
  const res = await request(`${url}/stream`)
  t.equal(res.statusCode, 200, 'the head was already out')
  t.equal(res.body, 'partial')
  t.equal(res.complete, false, 'never a clean end')
  const [line] = hangReports(logs)
  t.ok(line, 'the hang was reported')
  const report = line?.report as HangReport
  t.equal(report.headersSent, true)
  t.equal(report.bytesWritten, 7)
  t.match(line?.msg, /head already sent/)
})

t.test('a route timeout overrides the plugin timeout both ways, and 0 turns the watchdog off for that route', async (t) => {
  let unguarded: AsyncReply | undefined
  const { url, app } = await startApp(t, { timeout: 5000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/short', timeout: 100, handler () {} })
    asyncGet(app, '/off', {
      timeout: 0,
      handler (request, reply) { unguarded = reply }
    })
  })
  const started = Date.now()
  const short = await request(`${url}/short`)
  t.equal(short.statusCode, 504)
  t.equal(JSON.parse(short.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.ok(Date.now() - started < 3000, 'the route timeout, not the plugin one, applied')

  const off = request(`${url}/off`)
  await waitFor(() => unguarded !== undefined, 2000, 'the /off handler')
  // Well past what any watchdog of this app would allow at the route level.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(app.asyncRoute.pending().length, 1, 'still pending with the watchdog off')
  unguarded?.finish('eventually')
  const res = await off
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'eventually')

  // A route timeout longer than the plugin's: the plugin's does not cut it short.
  const { url: url2 } = await startApp(t, { timeout: 50, closeGrace: 100 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/longer', timeout: 10_000, handler (request, reply) { setTimeout(() => reply.finish('in time'), 300) } })
    app.asyncRoute({ method: 'GET', url: '/inherits', handler (request, reply) { setTimeout(() => reply.finish('too late'), 300) } })
  })
  const longer = await request(`${url2}/longer`)
  t.equal(longer.statusCode, 200)
  t.equal(longer.body, 'in time')
  const inherits = await request(`${url2}/inherits`)
  t.equal(inherits.statusCode, 504, 'a route without its own timeout has the plugin\'s')
})

t.test('reply.setTimeout() re-arms the watchdog from now', async (t) => {
  const { url } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/rearmed', {
      handler (request, reply) {
        reply.setTimeout(400)
        setTimeout(() => reply.finish('survived'), 250)
      }
    })
    asyncGet(app, '/plain', {
      handler (request, reply) {
        setTimeout(() => reply.finish('survived'), 250)
      }
    })
  })
  const [rearmed, plain] = await Promise.all([request(`${url}/rearmed`), request(`${url}/plain`)])
  t.equal(rearmed.statusCode, 200, 're-armed to 400 ms, finished at 250 ms')
  t.equal(rearmed.body, 'survived')
  t.equal(plain.statusCode, 504, 'the same reply without re-arming times out at 100 ms')
})

t.test('reply.setTimeout() re-armed shorter fires sooner than the route timeout', async (t) => {
  const { url } = await startApp(t, { timeout: 10_000 }, (app) => {
    asyncGet(app, '/sooner', {
      handler (request, reply) { reply.setTimeout(100) }
    })
  })
  const started = Date.now()
  const res = await request(`${url}/sooner`, { timeout: 5000 })
  t.equal(res.statusCode, 504)
  t.ok(Date.now() - started < 4000, 'fired at the re-armed delay')
})

t.test('reply.setTimeout(0) disarms the watchdog', async (t) => {
  const { url } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/disarmed', {
      handler (request, reply) {
        reply.setTimeout(0)
        setTimeout(() => reply.finish('no watchdog'), 300)
      }
    })
  })
  const res = await request(`${url}/disarmed`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'no watchdog')
})

t.test('reply.setTimeout() throws a TypeError for invalid values and keeps the watchdog as it was', async (t) => {
  const bad: unknown[] = [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2_147_483_648, '100', null, undefined]
  let results: string[] = []
  const { url } = await startApp(t, { timeout: 150 }, (app) => {
    asyncGet(app, '/bad', {
      handler (request, reply) {
        results = bad.map((value) => {
          try {
            reply.setTimeout(value as number)
            return 'accepted'
          } catch (error) {
            return error instanceof TypeError && /setTimeout/.test(error.message) ? 'TypeError' : String(error)
          }
        })
        // Nothing finishes this reply: the original 150 ms watchdog must still fire.
      }
    })
    asyncGet(app, '/edges', {
      handler (request, reply) {
        reply.setTimeout(2_147_483_647).setTimeout(1)
        setTimeout(() => reply.finish('too late'), 300)
      }
    })
  })
  const res = await request(`${url}/bad`)
  t.equal(res.statusCode, 504, 'the original watchdog still fired')
  t.same(results, bad.map(() => 'TypeError'), 'every invalid value threw a TypeError naming setTimeout')
  const edges = await request(`${url}/edges`)
  t.equal(edges.statusCode, 504, 'the largest and smallest valid values are accepted (chainable), the last one wins')
})

t.test('reply.setTimeout() after the reply ended does not arm anything', async (t) => {
  let threw: unknown = 'not called'
  const { url, logs } = await startApp(t, { timeout: 0 }, (app) => {
    asyncGet(app, '/done', {
      handler (request, reply) {
        reply.finish('done')
        try {
          t.equal(reply.setTimeout(10), reply, 'chainable even after the end')
          threw = null
        } catch (error) {
          threw = error
        }
      }
    })
  })
  const res = await request(`${url}/done`)
  t.equal(res.statusCode, 200)
  t.equal(threw, null)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(hangReports(logs), [], 'no watchdog fired for an ended reply')
})

t.test('when the watchdog fires, a pending upstream request is cancelled', async (t) => {
  const upstream = await stalledUpstream(t)
  let fetchResult: { err: Error | null, res: unknown } | undefined
  const { url } = await startRoute(t, { timeout: 150 }, (request, reply) => {
    reply.fetch(upstream.url, (err, res) => {
      fetchResult = { err, res }
      if (err !== null) return reply.fail(err)
      reply.finish('unexpected')
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 504)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_TIMEOUT', 'the watchdog answered, not the cancelled fetch')
  t.equal(upstream.requests.length, 1, 'the upstream got the request')
  await socketClosed(upstream.requests[0] as IncomingMessage)
  t.pass('the upstream saw its request socket closed')
  await waitFor(() => fetchResult !== undefined, 2000, 'the fetch callback')
  t.ok(fetchResult?.err instanceof Error, 'the cancelled fetch calls back with an error')
  t.equal(fetchResult?.res, undefined, 'and never with a response')
})

t.test('when the watchdog fires, an upstream body still being received is released', async (t) => {
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first chunk, and then nothing')
  })
  t.teardown(() => upstream.close())
  const { url, logs } = await startRoute(t, { timeout: 150 }, async (request, reply) => {
    await reply.fetch(upstream.url)
    // The body is never read: the request stays in flight until the watchdog fires.
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 504)
  await socketClosed(upstream.requests[0] as IncomingMessage)
  t.pass('the upstream saw its request socket closed')
  const [line] = hangReports(logs)
  const report = line?.report as HangReport
  t.equal(report.inflight.length, 1, 'an unread body counts as in flight')
  t.equal(report.handlerSettled, true)
})

t.test('reply.signal aborts with the timeout error when the watchdog fires', async (t) => {
  let early: AbortSignal | undefined
  let reason: unknown
  let late: AbortSignal | undefined
  const { url } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/early', {
      handler (request, reply) {
        early = reply.signal
        early.addEventListener('abort', () => { reason = early?.reason })
      }
    })
    asyncGet(app, '/late', {
      handler (request, reply) {
        // Read for the first time only after the watchdog fired.
        setTimeout(() => { late = reply.signal }, 250)
      }
    })
  })
  const res = await request(`${url}/early`)
  t.equal(res.statusCode, 504)
  t.equal(early?.aborted, true)
  t.equal((reason as { code?: string }).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.equal((reason as { statusCode?: number }).statusCode, 504)

  const lateRes = await request(`${url}/late`)
  t.equal(lateRes.statusCode, 504)
  await waitFor(() => late !== undefined, 2000, 'the late read of reply.signal')
  t.equal(late?.aborted, true, 'a signal first read after the timeout is already aborted')
  t.equal((late?.reason as { code?: string }).code, 'FST_ASYNC_ROUTE_TIMEOUT')
})

t.test('hang report: one warning through the request logger naming the stalled upstream call', async (t) => {
  const upstream = await stalledUpstream(t)
  const port = new URL(upstream.origin).port
  const secretUrl = `http://alice:s3cr3t-pw@127.0.0.1:${port}/slow?q=2`
  let requestId: string | undefined
  const { url, logs } = await startApp(t, { timeout: 150 }, (app) => {
    asyncGet(app, '/hang', {
      async handler (request, reply) {
        requestId = request.id
        const res = await reply.fetch(secretUrl)
        reply.finish(await res.body.text())
      }
    })
  })
  const res = await request(`${url}/hang?x=1&y=two`)
  t.equal(res.statusCode, 504)
  t.equal(upstream.requests[0]?.url, '/slow?q=2', 'the upstream call really was made')
  const reports = hangReports(logs)
  t.equal(reports.length, 1, 'exactly one hang report')
  const line = reports[0] as LogLine
  t.equal(line.reqId, requestId, 'logged through the request logger')
  const report = line.report as HangReport
  t.same(Object.keys(report).sort(), ['bytesWritten', 'elapsedMs', 'handlerSettled', 'headersSent', 'id', 'inflight', 'method', 'url'])
  t.equal(report.id, requestId)
  t.equal(report.method, 'GET')
  t.equal(report.url, '/hang?x=1&y=two', 'the url keeps its query string')
  t.ok(report.elapsedMs >= 140 && report.elapsedMs < 3000, `elapsedMs ${report.elapsedMs}`)
  t.equal(report.handlerSettled, false, 'the async handler is still awaiting the upstream')
  t.equal(report.headersSent, false)
  t.equal(report.bytesWritten, 0)
  t.equal(report.inflight.length, 1)
  const inflight = report.inflight[0] as HangReport['inflight'][number]
  t.equal(inflight.method, 'GET')
  t.equal(inflight.url, `http://127.0.0.1:${port}/slow?q=2`, 'the upstream url, without credentials')
  t.ok(inflight.ageMs >= 0 && inflight.ageMs <= report.elapsedMs, `ageMs ${inflight.ageMs}`)
  t.match(line.msg, `GET http://127.0.0.1:${port}/slow?q=2`, 'the message names the upstream call')
  t.match(line.msg, /head not sent/)
  const everything = JSON.stringify(logs)
  t.notMatch(everything, 's3cr3t-pw', 'the password never reaches the logs')
  t.notMatch(everything, 'alice', 'nor the user name')
  t.notMatch(res.body, String(port), 'the client answer does not name the upstream')
})

t.test('hang report: handlerSettled tells a returned handler from one still running', async (t) => {
  const { url, logs } = await startApp(t, { timeout: 100 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/returned', handler () {} })
    asyncGet(app, '/running', {
      async handler () {
        await new Promise(() => {})
      }
    })
    app.asyncRoute({
      method: 'POST',
      url: '/written',
      handler (request, reply) {
        reply.write('héllo')
        reply.write(new Uint8Array([1, 2, 3]))
      }
    })
  })
  const returned = await request(`${url}/returned`)
  const running = await request(`${url}/running`)
  const written = await request(`${url}/written`, { method: 'POST' })
  t.equal(returned.statusCode, 504)
  t.equal(running.statusCode, 504)
  t.equal(written.complete, false)
  const byUrl = new Map(hangReports(logs).map((line) => [(line.report as HangReport).url, line]))
  t.equal(byUrl.size, 3)

  const r = byUrl.get('/returned') as LogLine
  t.equal((r.report as HangReport).handlerSettled, true)
  t.same((r.report as HangReport).inflight, [])
  t.match(r.msg, /handler returned and nothing is in flight/)
  t.match(r.msg, /reply\.finish\(\)/)

  const s = byUrl.get('/running') as LogLine
  t.equal((s.report as HangReport).handlerSettled, false)
  t.match(s.msg, /handler is still running/)

  const w = byUrl.get('/written') as LogLine
  const report = w.report as HangReport
  t.equal(report.method, 'POST')
  t.equal(report.headersSent, true)
  t.equal(report.bytesWritten, Buffer.byteLength('héllo') + 3, 'body bytes only, not the head or chunk framing')
})

t.test('a fail() from a fetch callback cancelled by the watchdog is not a mistake: debug only', async (t) => {
  const upstream = await stalledUpstream(t)
  let called = false
  const { url, logs } = await startRoute(t, { timeout: 100 }, (request, reply) => {
    reply.fetch(upstream.url, (err, res) => {
      called = true
      if (err !== null) return reply.fail(err)
      reply.finish(String(res.statusCode))
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 504)
  await waitFor(() => called, 2000, 'the fetch callback')
  const warnings = logsAt(logs, LEVEL.warn)
  t.equal(warnings.length, 1, 'the hang report is the only warning')
  t.ok(warnings[0]?.report)
  t.ok(logsAt(logs, LEVEL.debug, 'reply.fail() called after the reply ended').length === 1, 'the late fail() is logged at debug')
})

t.test('onTimeout receives the hang report and may answer instead of the 504', async (t) => {
  const seen: Array<{ url: string, report: HangReport, reply: AsyncReply }> = []
  const signals = new Map<string, AbortSignal>()
  const { url, logs, app } = await startApp(t, {
    timeout: 100,
    onTimeout (request, reply, report) {
      seen.push({ url: request.url, report, reply })
      if (request.url === '/answer') reply.finish('late')
      if (request.url === '/throw') throw new Error('onTimeout broke')
    }
  }, (app) => {
    for (const path of ['/answer', '/ignore', '/throw']) {
      asyncGet(app, path, {
        handler (request, reply) {
          signals.set(path, reply.signal)
        }
      })
    }
  })

  const answer = await request(`${url}/answer`)
  t.equal(answer.statusCode, 200, 'onTimeout answered')
  t.equal(answer.body, 'late')
  t.ok(answer.complete)
  t.equal(seen.length, 1)
  const logged = hangReports(logs)
  t.equal(logged.length, 1, 'the hang is still reported')
  t.same(seen[0]?.report, logged[0]?.report, 'onTimeout gets the logged report')
  t.equal(seen[0]?.reply.finished, true)
  t.equal(seen[0]?.reply.headersSent, true, 'the late answer went out')
  t.equal(signals.get('/answer')?.aborted, true, 'signal aborts even though onTimeout answered')
  t.equal((signals.get('/answer')?.reason as { code?: string }).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.same(app.asyncRoute.stats(), { started: 1, finished: 0, timedOut: 1, aborted: 0, failed: 0, rejected: 0, pending: 0 },
    'counted as timed out, not finished')
  t.same(logsAt(logs, LEVEL.warn, 'already ended'), [], 'no warning about the watchdog and onTimeout')

  const ignore = await request(`${url}/ignore`)
  t.equal(ignore.statusCode, 504, 'onTimeout did nothing: the default action follows')
  t.equal(JSON.parse(ignore.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  t.equal(seen.length, 2)
  t.equal(seen[1]?.url, '/ignore')

  const thrown = await request(`${url}/throw`)
  t.equal(thrown.statusCode, 504, 'onTimeout threw: the default action still follows')
  t.equal(JSON.parse(thrown.body).code, 'FST_ASYNC_ROUTE_TIMEOUT')
  const errors = logsAt(logs, LEVEL.error, 'onTimeout threw')
  t.equal(errors.length, 1, 'the throw is logged at error level')
  t.match((errors[0] as LogLine).err, { message: 'onTimeout broke' })
  t.same(app.asyncRoute.stats(), { started: 3, finished: 0, timedOut: 3, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('onTimeout may fail the reply with its own error', async (t) => {
  const { url } = await startRoute(t, {
    timeout: 100,
    onTimeout (request, reply) {
      reply.fail(Object.assign(new Error('upstream too slow, try later'), { statusCode: 503, code: 'MY_BUSY' }))
    }
  }, () => {})
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 503)
  t.same(JSON.parse(res.body), { statusCode: 503, code: 'MY_BUSY', error: 'Service Unavailable', message: 'upstream too slow, try later' })
})

t.test('300 concurrent unfinished replies all get their 504 from the watchdog', async (t) => {
  const count = 300
  const { url, app } = await startApp(t, { timeout: 300 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/hang/:n', handler () {} })
  })
  const started = Date.now()
  const requests: Array<Promise<{ statusCode: number, body: string }>> = []
  for (let n = 0; n < count; n++) requests.push(request(`${url}/hang/${n}`, { timeout: 10_000 }))
  await waitFor(() => app.asyncRoute.stats().started === count, 8000, 'every request to reach its handler')
  const results = await Promise.all(requests)
  const elapsed = Date.now() - started
  t.equal(results.filter((res) => res.statusCode === 504).length, count, 'every one answered 504')
  t.ok(results.every((res) => JSON.parse(res.body).code === 'FST_ASYNC_ROUTE_TIMEOUT'))
  t.ok(elapsed < 8000, `all answered in ${elapsed} ms`)
  t.same(app.asyncRoute.pending(), [])
  t.same(app.asyncRoute.stats(), { started: count, finished: 0, timedOut: count, aborted: 0, failed: 0, rejected: 0, pending: 0 })
})

t.test('errors from a fetch callback or pipe() after the watchdog fired are ignored at debug level', async (t) => {
  const upstream = await stalledUpstream(t)
  let callbackRan = false
  let piped: 'pending' | 'resolved' | 'rejected' = 'pending'
  const { url, logs } = await startApp(t, { timeout: 100 }, (app) => {
    asyncGet(app, '/callback', {
      handler (request, reply) {
        reply.fetch(upstream.url, (err) => {
          callbackRan = true
          if (err !== null) throw err
        })
      }
    })
    asyncGet(app, '/pipe', {
      handler (request, reply) {
        reply.pipe(upstream.url).then(() => { piped = 'resolved' }, () => { piped = 'rejected' })
      }
    })
  })
  const [callback, pipe] = await Promise.all([request(`${url}/callback`), request(`${url}/pipe`)])
  t.equal(callback.statusCode, 504)
  t.equal(pipe.statusCode, 504)
  await waitFor(() => callbackRan && piped !== 'pending', 2000, 'the callback and pipe() to settle')
  t.equal(piped, 'resolved', 'pipe() never rejects')
  t.equal(logsAt(logs, LEVEL.debug, 'already ended').length, 2, 'both late errors are logged at debug')
  t.equal(hangReports(logs).length, 2)
  t.equal(logsAt(logs, LEVEL.warn).length, 2, 'no warning beyond the two hang reports')
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'the 504s are not logged again at error level')
})

t.test('a malformed upstream URL with credentials is never echoed to the logs', async (t) => {
  const { url, logs } = await startRoute(t, { timeout: 1000, allowedOrigins: ['http://127.0.0.1:1'] }, async (request, reply) => {
    await reply.fetch('http://bob:hunter2@[not-a-host/')
    reply.finish('unreachable')
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST')
  t.notMatch(JSON.stringify(logs), 'hunter2')
  t.ok(JSON.stringify(logs).includes('[invalid url]'), 'the URL is replaced in the log')
})

t.test('a watchdog 504 and an idleTimeout 504 are each logged once: a warning with the hang report, nothing at error level', async (t) => {
  const { url, app, logs } = await startApp(t, { timeout: 100 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/hang', handler () {} })
    app.asyncRoute({ method: 'GET', url: '/silent', timeout: 0, idleTimeout: 100, handler () {} })
  })
  for (const [path, code] of [['/hang', 'FST_ASYNC_ROUTE_TIMEOUT'], ['/silent', 'FST_ASYNC_ROUTE_IDLE_TIMEOUT']]) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 504, path)
    t.equal((JSON.parse(res.body) as { code: string }).code, code)
    // Through inject() as well: the same lines.
    t.equal((await app.inject(path)).statusCode, 504, `${path} through inject()`)
  }
  const reports = hangReports(logs)
  t.strictSame(reports.map((line) => (line.report as HangReport).url), ['/hang', '/hang', '/silent', '/silent'], 'one warning per 504, with its report')
  t.equal(logsAt(logs, LEVEL.warn).length, 4, 'no other warning')
  t.strictSame(logs.filter((line) => line.level >= LEVEL.error), [], 'nothing at error level, no stack trace')
})

t.test('an error answer whose head Node refuses cuts the connection instead of crashing', async (t) => {
  const { url, app, logs } = await startRoute(t, { timeout: 100 }, {
    onRequest (_request, reply, done) {
      // Fastify does not check header values: Node refuses this one at writeHead().
      reply.header('x-broken', 'line\nbreak')
      done()
    },
    handler () {}
  })
  const res = await request(`${url}/`).catch((error: Error) => error)
  t.ok(res instanceof Error, 'the connection was cut before any head')
  t.equal(logsAt(logs, LEVEL.error, 'the error answer could not be sent').length, 1)
  t.equal(app.asyncRoute.stats().timedOut, 1)
})

t.test('the hang report of a streaming reply says it was streaming, not that finish() was forgotten', async (t) => {
  const { url, logs } = await startRoute(t, { timeout: 150 }, (_request, reply) => { reply.write('x'.repeat(208)) })
  const res = await request(`${url}/`)
  t.equal(res.complete, false, 'the stream was cut')
  const [line] = logsAt(logs, LEVEL.warn, 'not finished')
  t.match(String(line?.msg), /streaming: 208 bytes written, the last \d+ ms ago/)
  t.notMatch(String(line?.msg), /forgotten/)
})

t.test('replies waiting in the middle of a route\'s watchdog queue re-armed or finished from outside: the others still time out on time', async (t) => {
  const held = new Map<string, AsyncReply>()
  const { url, app } = await startApp(t, { timeout: 500 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/hold/:id',
      handler (request, reply) {
        held.set((request.params as { id: string }).id, reply)
      }
    })
  })
  const started = Date.now()
  const answers = ['a', 'b', 'c', 'd'].map(async (id) => {
    const res = await request(`${url}/hold/${id}`)
    return { id, status: res.statusCode, body: res.body, after: Date.now() - started }
  })
  await waitFor(() => held.size === 4, 2000, 'four replies waiting')
  t.equal(app.asyncRoute.pending().length, 4)
  // From outside any handler: b leaves the queue for a watchdog of its own, c ends.
  held.get('b')?.setTimeout(2000)
  held.get('c')?.finish('done')
  const byId = new Map((await Promise.all(answers)).map((answer) => [answer.id, answer]))
  t.equal(byId.get('c')?.status, 200)
  t.equal(byId.get('c')?.body, 'done')
  for (const id of ['a', 'd']) {
    const answer = byId.get(id)
    t.equal(answer?.status, 504, `${id}, on either side of them, timed out`)
    t.ok((answer?.after ?? 0) < 1500, `${id} on its route's timeout (${answer?.after ?? 0} ms)`)
  }
  const b = byId.get('b')
  t.equal(b?.status, 504)
  t.ok((b?.after ?? 0) >= 1500, `b on its own, later watchdog (${b?.after ?? 0} ms)`)
  t.same(app.asyncRoute.pending(), [])
})

t.test('an app logger that throws on the hang warning: every reply still gets its 504, on time, and the error reaches the process', async (t) => {
  const errors = collectUncaught(t)
  const broken = new Error('log transport down')
  const { logger } = captureLogs('debug')
  const throwingLogger = {
    ...logger,
    hooks: {
      logMethod (this: unknown, args: unknown[], method: (...args: unknown[]) => void, level: number): void {
        if (level === LEVEL.warn) throw broken
        method.apply(this, args)
      }
    }
  }
  const { url, app } = await startApp(t, { timeout: 300 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/hang/:id', handler () {} })
    app.asyncRoute({ method: 'GET', url: '/silent', timeout: 0, idleTimeout: 300, handler () {} })
  }, { logger: throwingLogger })
  const started = Date.now()
  // a and b wait in the route's queue, due together; c has its idle timer.
  const answers = await Promise.all(['/hang/a', '/hang/b', '/silent'].map(async (path) => {
    const res = await request(`${url}${path}`)
    return { path, status: res.statusCode, code: (JSON.parse(res.body) as { code: string }).code, after: Date.now() - started }
  }))
  for (const answer of answers) {
    t.equal(answer.status, 504, `${answer.path} answered`)
    t.ok(answer.after < 2000, `${answer.path} on time (${answer.after} ms)`)
  }
  t.same(answers.map((answer) => answer.code), ['FST_ASYNC_ROUTE_TIMEOUT', 'FST_ASYNC_ROUTE_TIMEOUT', 'FST_ASYNC_ROUTE_IDLE_TIMEOUT'])
  t.same(errors, [broken, broken, broken], 'each warning\'s error reached the process')
  // The route's queue still times replies that join it later.
  const later = await request(`${url}/hang/c`)
  t.equal(later.statusCode, 504)
  t.same(app.asyncRoute.pending(), [])
})
