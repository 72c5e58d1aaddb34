// Where each in-flight upstream request is when a report is built: the `state` of an
// `inflight` entry in the hang report and in `pending()` ('queued' for a connection of its
// pool, 'sent', 'receiving' once its head arrived, 'retry-wait' between tries), left out when
// unknown (a fetch before its head), and said in the watchdog's log line. Real upstreams and
// clients; the watchdog is re-armed short (`reply.setTimeout`) once the request is where the
// test wants it, so no report depends on how fast a loaded machine is.
import type { IncomingMessage, ServerResponse } from 'node:http'
import t from 'tap'
import { Pool } from 'undici'
import type { AsyncReply, HangReport, InflightReport, PendingReply } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, type LogLine } from './helpers/app.js'
import { openRequest, readResponse, request, waitFor } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

/** The watchdog's reports by request url, as the route's `onWatchdog` saw them. */
type Reports = Map<string, HangReport>

function keep (reports: Reports) {
  return (_request: unknown, _reply: unknown, report: HangReport): void => {
    reports.set(report.url, report)
  }
}

function only (report: HangReport | undefined): InflightReport {
  if (report === undefined) throw new Error('no report')
  if (report.inflight.length !== 1) throw new Error(`${report.inflight.length} requests in flight`)
  return report.inflight[0] as InflightReport
}

function warning (logs: LogLine[], url: string): string {
  const lines = logsAt(logs, LEVEL.warn).filter((line) => (line.report as HangReport | undefined)?.url === url)
  if (lines.length !== 1) throw new Error(`${lines.length} hang warnings for ${url}`)
  return String(lines[0]?.msg)
}

/** Opens a request, re-arms its reply's watchdog to fire now once the head arrived, and reads the rest. */
async function afterHead (url: string, reply: () => AsyncReply | undefined): Promise<{ statusCode: number, complete: boolean }> {
  const { res } = await openRequest(url)
  reply()?.setTimeout(1)
  return await new Promise((resolve) => {
    readResponse(res, (_body, complete) => resolve({ statusCode: res.statusCode ?? 0, complete }))
  })
}

/** An upstream that answers the head and a first chunk, then never more. */
function headThenStall (_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/plain' })
  res.write('partial')
}

t.test("pipe(url): 'queued' behind a busy pool's one connection, 'sent' on it", async (t) => {
  const upstream = await upstreamFor(t, () => {})
  const pool = new Pool(upstream.origin, { connections: 1 })
  t.teardown(() => pool.destroy())
  const reports: Reports = new Map()
  let first: AsyncReply | undefined
  let pendingWhenQueued: PendingReply[] = []
  const { url, logs } = await startApp(t, { dispatcher: pool }, (app) => {
    asyncGet(app, '/first', {
      timeout: 10_000,
      onWatchdog: keep(reports),
      handler (_request, reply) {
        first = reply
        return reply.pipe(`${upstream.origin}/held`)
      }
    })
    asyncGet(app, '/second', {
      timeout: 200,
      onWatchdog (request, reply, report) {
        keep(reports)(request, reply, report)
        pendingWhenQueued = app.asyncRoute.pending()
        // The first reply's turn, while it still holds the connection.
        first?.setTimeout(1)
      },
      handler: (_request, reply) => reply.pipe(`${upstream.origin}/waiting`)
    })
  })
  const firstAnswer = request(`${url}/first`)
  await waitFor(() => upstream.requests.length === 1, 2000, 'the first request on the connection')
  const second = await request(`${url}/second`)
  t.equal(second.statusCode, 504)
  t.equal((await firstAnswer).statusCode, 504)
  t.equal(upstream.requests.length, 1, 'the second request never reached the upstream')

  t.same(only(reports.get('/second')), { method: 'GET', url: `${upstream.origin}/waiting`, ageMs: only(reports.get('/second')).ageMs, state: 'queued' })
  t.equal(only(reports.get('/first')).state, 'sent')
  const byUrl = new Map(pendingWhenQueued.map((entry) => [entry.url, entry.inflight[0]?.state]))
  t.same(Object.fromEntries(byUrl), { '/first': 'sent', '/second': 'queued' }, 'pending() shows the same states')
  t.match(warning(logs, '/second'), new RegExp(`waiting on upstream GET ${upstream.origin}/waiting \\(\\d+ ms, queued for a connection\\)`))
  t.match(warning(logs, '/first'), new RegExp(`GET ${upstream.origin}/held \\(\\d+ ms, sent, no answer yet\\)`))
})

t.test("pipe(url): 'sent' while the upstream says nothing, 'receiving' once its head arrived", async (t) => {
  const replies = new Map<string, AsyncReply>()
  const upstream = await upstreamFor(t, (req, res) => {
    // The request arrived: it was written.
    if (req.url === '/head') headThenStall(req, res)
    else replies.get('/silent')?.setTimeout(1)
  })
  const reports: Reports = new Map()
  const { url, logs } = await startApp(t, { timeout: 10_000 }, (app) => {
    for (const path of ['/silent', '/head']) {
      asyncGet(app, path, {
        onWatchdog: keep(reports),
        handler (_request, reply) {
          replies.set(path, reply)
          return reply.pipe(`${upstream.origin}${path}`)
        }
      })
    }
  })
  const silent = await request(`${url}/silent`)
  t.equal(silent.statusCode, 504)
  t.equal(only(reports.get('/silent')).state, 'sent')

  const head = await afterHead(`${url}/head`, () => replies.get('/head'))
  t.equal(head.statusCode, 200)
  t.equal(head.complete, false, 'cut after the head: the upstream never finished')
  t.equal(only(reports.get('/head')).state, 'receiving')
  t.match(warning(logs, '/head'), /\(\d+ ms, receiving the body\)/)
})

t.test("fetch: no state before its head (undici does not say when it is written), 'receiving' after it", async (t) => {
  const replies = new Map<string, AsyncReply>()
  const upstream = await upstreamFor(t, (req, res) => {
    if (req.url === '/head') headThenStall(req, res)
    else replies.get('/silent')?.setTimeout(1)
  })
  const reports: Reports = new Map()
  const { url, logs } = await startApp(t, { timeout: 10_000 }, (app) => {
    asyncGet(app, '/silent', {
      onWatchdog: keep(reports),
      async handler (_request, reply) {
        replies.set('/silent', reply)
        await reply.fetch(`${upstream.origin}/silent`)
      }
    })
    asyncGet(app, '/head', {
      onWatchdog: keep(reports),
      async handler (_request, reply) {
        await reply.fetch(`${upstream.origin}/head`)
        // The head arrived; the body is left unread.
        reply.setTimeout(1)
      }
    })
  })
  t.equal((await request(`${url}/silent`)).statusCode, 504)
  const silent = only(reports.get('/silent'))
  t.same(Object.keys(silent).sort(), ['ageMs', 'method', 'url'], 'no state key at all')
  t.match(warning(logs, '/silent'), new RegExp(`GET ${upstream.origin}/silent \\(\\d+ ms\\)`))

  t.equal((await request(`${url}/head`)).statusCode, 504)
  t.equal(only(reports.get('/head')).state, 'receiving')
})

for (const how of ['pipe', 'fetch'] as const) {
  t.test(`${how}: 'retry-wait' between tries (the watchdog re-armed to fire during the wait)`, async (t) => {
    const upstream = await upstreamFor(t, (_req, res) => { res.writeHead(503).end('busy') })
    const reports: Reports = new Map()
    let reply: AsyncReply | undefined
    const { url, app, logs } = await startApp(t, { timeout: 10_000, retry: { attempts: 2, minDelay: 2000, maxDelay: 2000 } }, (app) => {
      asyncGet(app, '/', {
        onWatchdog: keep(reports),
        async handler (_request, _reply) {
          reply = _reply
          if (how === 'pipe') return await _reply.pipe(`${upstream.origin}/busy`)
          await _reply.fetch(`${upstream.origin}/busy`)
        }
      })
    })
    const answered = request(`${url}/`)
    await waitFor(() => app.asyncRoute.pending()[0]?.inflight[0]?.state === 'retry-wait', 3000, 'the wait for the next try')
    reply?.setTimeout(1)
    t.equal((await answered).statusCode, 504)
    t.equal(upstream.requests.length, 1, 'the watchdog fired before the next try')
    t.equal(only(reports.get('/')).state, 'retry-wait')
    t.match(warning(logs, '/'), /\(\d+ ms, waiting to retry\)/)
  })

  t.test(`${how}: the next try's states are its own ('receiving' once its head arrived)`, async (t) => {
    let tries = 0
    const upstream = await upstreamFor(t, (req, res) => {
      if (++tries === 1) res.writeHead(503).end('busy')
      else headThenStall(req, res)
    })
    const reports: Reports = new Map()
    let reply: AsyncReply | undefined
    const { url } = await startApp(t, { timeout: 10_000, retry: { attempts: 2, minDelay: 0, maxDelay: 0 } }, (app) => {
      asyncGet(app, '/', {
        onWatchdog: keep(reports),
        async handler (_request, _reply) {
          reply = _reply
          if (how === 'pipe') return await _reply.pipe(`${upstream.origin}/busy`)
          await _reply.fetch(`${upstream.origin}/busy`)
          _reply.setTimeout(1)
        }
      })
    })
    if (how === 'pipe') t.equal((await afterHead(`${url}/`, () => reply)).complete, false)
    else t.equal((await request(`${url}/`)).statusCode, 504)
    t.equal(tries, 2)
    t.equal(only(reports.get('/')).state, 'receiving')
  })
}
