// What the app's own functions can throw, return or fail with, tried as an attacker would:
// values that the error answer or the logger cannot read (no prototype, a throwing getter or
// toString, a BigInt message, a frozen error, a Proxy that throws), returned values whose
// `then` throws, callbacks that reject, rewriteHeaders results Node refuses. Each gets its
// answer, nothing hangs, and the process neither crashes nor leaves an unhandled rejection
// (the helpers fail the run on either).
import t from 'tap'
import type { AsyncReply, RenderError, RewriteHeaders } from '../plugin/index.js'
import { asyncGet, collectUncaught, LEVEL, logsAt, startApp, startRoute } from './helpers/app.js'
import { request, sendOnly, waitFor } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

/** A fresh value per request: some of them are consumed (frozen, tagged) by reading them. */
const VALUES: Record<string, { make: () => unknown, message: string }> = {
  'no prototype': { make: () => Object.create(null), message: 'The error could not be read' },
  'a toString that throws': { make: () => ({ toString () { throw new Error('toString') } }), message: 'The error could not be read' },
  'a message getter that throws': {
    make: () => Object.defineProperty(new Error('m'), 'message', { get () { throw new Error('message getter') } }),
    message: 'The error could not be read'
  },
  // (Read as text: the JSON body could not hold it as it is.)
  'a BigInt message': { make: () => Object.defineProperty(new Error('b'), 'message', { value: 10n }), message: '10' },
  'a Proxy whose every read throws': { make: () => new Proxy(new Error('p'), { get () { throw new Error('trap') } }), message: 'The error could not be read' },
  // Readable for the answer, but not for pino's serialiser: the log line falls back.
  'a frozen error': { make: () => Object.freeze(new Error('frozen')), message: 'frozen' },
  'an enumerable getter that throws': {
    make: () => Object.defineProperty(new Error('getter'), 'detail', { enumerable: true, get () { throw new Error('detail') } }),
    message: 'getter'
  }
}

const WAYS: Record<string, (value: unknown) => (request: unknown, reply: AsyncReply) => void | Promise<void>> = {
  'thrown by the handler': (value) => () => { throw value },
  'rejected by an async handler': (value) => async () => { throw value },
  'given to reply.fail()': (value) => (_request, reply) => { reply.fail(value) },
  'thrown later, from a timer, through fail()': (value) => (_request, reply) => { setTimeout(() => reply.fail(value), 5) }
}

function slug (text: string): string {
  return Buffer.from(text).toString('hex')
}

t.test('values an error answer cannot read: a 500 for each, in Fastify\'s shape, one error line each, the process serves on', async (t) => {
  const { url, app, logs } = await startApp(t, { timeout: 2000 }, (app) => {
    for (const [way, handler] of Object.entries(WAYS)) {
      for (const [name, value] of Object.entries(VALUES)) {
        app.asyncRoute({ method: 'GET', url: `/${slug(way)}/${slug(name)}`, handler: (request, reply) => handler(value.make())(request, reply) })
      }
    }
    asyncGet(app, '/after', (_request, reply) => reply.finish('still serving'))
  })
  let cases = 0
  for (const way of Object.keys(WAYS)) {
    for (const [name, value] of Object.entries(VALUES)) {
      const what = `${name}, ${way}`
      cases++
      const res = await request(`${url}/${slug(way)}/${slug(name)}`)
      t.equal(res.statusCode, 500, what)
      t.same(JSON.parse(res.body), { statusCode: 500, error: 'Internal Server Error', message: value.message }, what)
    }
  }
  t.equal((await request(`${url}/after`)).body, 'still serving')
  t.match(app.asyncRoute.stats(), { failed: cases, pending: 0 })
  t.equal(logsAt(logs, LEVEL.error).length, cases, 'one error line per answer, serialisable or not')
})

t.test('renderError gets a frozen error it cannot add statusCode to, and its answer still goes out', async (t) => {
  const seen: unknown[] = []
  const render: RenderError = (error, _request, reply) => {
    seen.push(error.statusCode)
    reply.status(500).header('content-type', 'application/problem+json').finish({ title: error.message })
  }
  const { url } = await startApp(t, { renderError: render }, (app) => {
    asyncGet(app, '/', () => { throw Object.freeze(new Error('frozen')) })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.equal(res.headers['content-type'], 'application/problem+json')
  t.same(JSON.parse(res.body), { title: 'frozen' })
  t.same(seen, [undefined], 'the frozen error kept what it had')
})

t.test('a handler that blocks before returning with its reply open still times out when due from its start, not later', async (t) => {
  const { url, logs } = await startRoute(t, { timeout: 200 }, () => {
    // 400 ms of synchronous work: the reply is due before the handler returns.
    const until = Date.now() + 400
    while (Date.now() < until);
  })
  const started = Date.now()
  const res = await request(`${url}/`)
  const took = Date.now() - started
  t.equal(res.statusCode, 504)
  // Due at 200 ms, found due when the handler returned at 400: fired then, not 200 ms later.
  t.ok(took < 580, `answered ${took} ms after the request (the handler alone took 400)`)
  const [line] = logsAt(logs, LEVEL.warn, 'not finished')
  t.ok(line !== undefined, 'the watchdog warned with its report')
})

t.test('an onEnd callback that throws a value nothing can read is logged as such; the reply and the process are unharmed', async (t) => {
  const { url, logs } = await startRoute(t, {}, (_request, reply) => {
    reply.onEnd(() => { throw new Proxy({}, { get () { throw new Error('trap') } }) })
    reply.finish('done')
  })
  const res = await request(`${url}/`)
  t.equal(res.body, 'done')
  const [line] = logsAt(logs, LEVEL.error, 'reply.onEnd() callback threw')
  t.match(JSON.stringify(line), /an unreadable value/)
})

/** A value whose `then` cannot be read: what a handler might return by mistake. */
function thenThrows (): unknown {
  return Object.defineProperty({}, 'then', { get () { throw new Error('then getter') } })
}

t.test('a returned value whose then cannot be read fails the reply with 500, with or without the upstream step', async (t) => {
  const up = await upstreamFor(t)
  const { url, app } = await startApp(t, { timeout: 2000 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/handler', handler: thenThrows as () => void })
    app.asyncRoute({ method: 'GET', url: '/after-upstream', upstream: up.url, handler: thenThrows as () => void })
    app.asyncRoute({ method: 'GET', url: '/upstream-fn', upstream: thenThrows as () => string, handler: (_request, reply) => { reply.finish('unreachable') } })
  })
  for (const path of ['/handler', '/after-upstream', '/upstream-fn']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 500, path)
    t.match(JSON.parse(res.body), { statusCode: 500, message: 'then getter' }, path)
  }
  t.match(app.asyncRoute.stats(), { failed: 3, pending: 0 })
})

t.test('an error message read once: a getter that answers once and then throws still gets its answer and its log line', async (t) => {
  const { url, logs } = await startRoute(t, {}, () => {
    let reads = 0
    throw Object.defineProperty(new Error('x'), 'message', {
      get () {
        if (++reads > 1) throw new Error('read twice')
        return 'once'
      }
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 500)
  t.equal(JSON.parse(res.body).message, 'once')
  t.equal(logsAt(logs, LEVEL.error, 'once').length, 1, 'logged with the message as it was read')
})

t.test('callbacks that reject (onEnd, onClose, onTimeout, renderError) are logged, never left unhandled', async (t) => {
  const render: RenderError = async () => { throw new Error('renderError rejected it') }
  const { url, logs } = await startApp(t, {
    timeout: 100,
    renderError: render,
    onTimeout: async () => { throw new Error('onTimeout rejected it') }
  }, (app) => {
    asyncGet(app, '/end', (_request, reply) => {
      reply.onEnd(async () => { throw new Error('onEnd rejected it') })
      // Not even a promise: a value whose `then` throws when read.
      reply.onEnd(thenThrows as () => void)
      reply.finish('ended')
    })
    asyncGet(app, '/hang', () => {})
    asyncGet(app, '/left', (_request, reply) => {
      reply.onClose(async () => { throw new Error('onClose rejected it') })
    })
  })
  t.equal((await request(`${url}/end`)).body, 'ended')
  const hung = await request(`${url}/hang`)
  t.equal(hung.statusCode, 504, 'the default answer, renderError having not finished')
  // A client that leaves: onClose runs.
  await request(`${url}/left`, { timeout: 50 }).catch(() => {})
  await waitFor(() => logsAt(logs, LEVEL.error, 'rejected').length >= 5, 2000, 'five rejections logged')
  const text = JSON.stringify(logsAt(logs, LEVEL.error, 'rejected'))
  for (const name of ['onEnd', 'onClose', 'onTimeout', 'renderError']) t.match(text, `${name} rejected it`, name)
  t.match(text, 'then getter', 'the unreadable then, logged too')
})

t.test('rewriteHeaders: an array with a value Node refuses, or a promise, is a 500 REWRITE_HEADERS before anything is sent', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.writeHead(200, { 'x-upstream': 'yes' }).end('upstream body') })
  const rewrites: Record<string, RewriteHeaders> = {
    'undefined in an array': (headers) => ({ ...headers, 'set-cookie': ['a=1', undefined as unknown as string] }),
    'CR/LF in one value of an array': (headers) => ({ ...headers, 'set-cookie': ['a=1', 'b=2\r\nx-injected: 1'] }),
    'a promise': (async (headers: Record<string, unknown>) => headers) as unknown as RewriteHeaders,
    'a promise that rejects': (async () => { throw new Error('later') }) as unknown as RewriteHeaders
  }
  const { url } = await startApp(t, {}, (app) => {
    for (const [name, rewriteHeaders] of Object.entries(rewrites)) {
      asyncGet(app, `/${slug(name)}`, (_request, reply) => reply.pipe(up.url, { rewriteHeaders }))
    }
  })
  for (const name of Object.keys(rewrites)) {
    const res = await request(`${url}/${slug(name)}`)
    t.equal(res.statusCode, 500, name)
    t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_REWRITE_HEADERS', name)
    t.equal(res.headers['x-upstream'], undefined, `${name}: nothing of the upstream head`)
  }
})

t.test('an app logger that throws on every line: each way a reply ends still answers its client, and app.close() ends', async (t) => {
  const errors = collectUncaught(t)
  const broken = new Error('log transport down')
  let failing = false
  const logger = {
    level: 'debug',
    hooks: {
      logMethod (this: unknown, args: unknown[], method: (...args: unknown[]) => void): void {
        // Every line of the plugin's throws; Fastify's own request lines ({ req } or { res }) pass.
        const [fields] = args
        const fastifys = typeof fields === 'object' && fields !== null && ('req' in fields || 'res' in fields)
        if (failing && !fastifys) throw broken
        method.apply(this, args)
      }
    }
  }
  const doesNotFinish: RenderError = () => {}
  const { url, app } = await startApp(t, { timeout: 300, closeGrace: 200 }, (app) => {
    // onWatchdog throws, and so does the logger told of it.
    app.asyncRoute({ method: 'GET', url: '/hang', onWatchdog () { throw new Error('onWatchdog') }, handler () {} })
    app.asyncRoute({ method: 'GET', url: '/fail', handler () { throw new Error('handler') } })
    app.asyncRoute({ method: 'GET', url: '/render', renderError: doesNotFinish, handler () { throw new Error('handler') } })
    app.asyncRoute({ method: 'GET', url: '/full', timeout: 0, maxPending: 1, handler () {} })
    app.asyncRoute({ method: 'GET', url: '/held', timeout: 0, handler () {} })
  }, { logger })
  failing = true
  const codeOf = (body: string): unknown => (JSON.parse(body) as { code?: unknown }).code
  const timedOut = await request(`${url}/hang`)
  t.equal(timedOut.statusCode, 504, 'the watchdog answers')
  t.equal(codeOf(timedOut.body), 'FST_ASYNC_ROUTE_TIMEOUT')
  t.equal((await request(`${url}/fail`)).statusCode, 500, 'a handler\'s throw is answered')
  t.equal((await request(`${url}/render`)).statusCode, 500, 'the default answer after a renderError that did not finish')
  // The first /full stays open; the second is over the route's maxPending.
  const heldFull = request(`${url}/full`)
  await waitFor(() => app.asyncRoute.pending().length === 1, 2000, 'the first /full open')
  const refused = await request(`${url}/full`)
  t.equal(refused.statusCode, 503, 'maxPending answers')
  t.equal(codeOf(refused.body), 'FST_ASYNC_ROUTE_OVERLOADED')
  // A client that leaves: its reply ends.
  const leaving = await sendOnly(`${url}/held`)
  await waitFor(() => app.asyncRoute.pending().length === 2, 2000, '/held open')
  leaving.destroy()
  await waitFor(() => app.asyncRoute.pending().length === 1, 2000, '/held ended once its client left')
  // Two replies open at close: each gets the 503 of a closing server, and close() ends.
  const heldAtClose = request(`${url}/held`)
  await waitFor(() => app.asyncRoute.pending().length === 2, 2000, 'two replies open at close')
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 3000, `close() ended (${Date.now() - started} ms)`)
  for (const answer of await Promise.all([heldFull, heldAtClose])) {
    t.equal(answer.statusCode, 503, 'answered at close')
    t.equal(codeOf(answer.body), 'FST_ASYNC_ROUTE_CLOSING')
  }
  t.same(app.asyncRoute.pending(), [])
  t.ok(errors.length > 0 && errors.every((error) => error === broken), `only the logger's errors reached the process (${errors.length})`)
})
