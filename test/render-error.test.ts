// renderError(error, request, reply): the app's own error format (RFC 9457 problem+json here)
// for every error answer the plugin sends before the head; the default answer when it throws
// or does not finish; the outcome unchanged.
import Fastify from 'fastify'
import t from 'tap'
import asyncRoute, { type AsyncReply, type AsyncRouteError, type RenderError } from '../plugin/index.js'
import { LEVEL, logsAt, startApp } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { refusedOrigin, upstreamFor } from './helpers/upstream.js'

const PROBLEM = 'application/problem+json'

/** An RFC 9457 rendering, as an app's setErrorHandler would write it. */
const problem: RenderError = (error, request, reply) => {
  reply.status(error.statusCode).header('content-type', PROBLEM).finish({
    type: `https://errors.example/${error.code}`,
    title: error.message,
    status: error.statusCode,
    instance: request.url
  })
}

t.test('renderError renders every error answer the plugin sends before the head, the maxPending 503 included (its retry-after kept)', async (t) => {
  const refused = await refusedOrigin()
  const up = await upstreamFor(t)
  let release = (): void => {}
  const { url, app } = await startApp(t, { renderError: problem, timeout: 150, closeGrace: 100 }, (app) => {
    app.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    app.asyncRoute({ method: 'GET', url: '/throw', handler: () => { throw Object.assign(new Error('no such thing'), { statusCode: 404, code: 'APP_NOT_FOUND' }) } })
    app.asyncRoute({ method: 'GET', url: '/fail', handler: (_request, reply) => reply.fail(new Error('plain')) })
    app.asyncRoute({ method: 'GET', url: '/watchdog', handler: () => {} })
    app.asyncRoute({ method: 'GET', url: '/idle', timeout: 0, idleTimeout: 100, handler: () => {} })
    app.asyncRoute({ method: 'GET', url: '/refused', handler: (_request, reply) => reply.pipe(`${refused}/`) })
    app.asyncRoute({ method: 'GET', url: '/bad-url', handler: (_request, reply) => reply.pipe('file:///etc/passwd') })
    app.asyncRoute({ method: 'GET', url: '/bad-path', handler: (_request, reply) => reply.forward(`${up.url}/a/%2e%2e/b`) })
    app.asyncRoute({ method: 'POST', url: '/too-large', handler: (_request, reply) => reply.forward(up.url, { bodyLimit: 10 }) })
    app.asyncRoute({ method: 'GET', url: '/full', maxPending: 1, timeout: 0, handler: (_request, reply) => { release = () => reply.finish('done') } })
  })
  const cases: Array<[string, number, string, Record<string, string>?]> = [
    ['/throw', 404, 'APP_NOT_FOUND'],
    ['/fail', 500, 'undefined'],
    ['/watchdog', 504, 'FST_ASYNC_ROUTE_TIMEOUT'],
    ['/idle', 504, 'FST_ASYNC_ROUTE_IDLE_TIMEOUT'],
    ['/refused', 502, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR'],
    ['/bad-url', 500, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST'],
    ['/bad-path', 400, 'FST_ASYNC_ROUTE_BAD_PATH']
  ]
  for (const [path, status, code] of cases) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, status, path)
    t.equal(res.headers['content-type'], PROBLEM, path)
    t.match(JSON.parse(res.body), { type: `https://errors.example/${code}`, status, instance: path }, path)
  }
  const tooLarge = await request(`${url}/too-large`, { method: 'POST', body: 'x'.repeat(100), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(tooLarge.statusCode, 413)
  t.match(JSON.parse(tooLarge.body), { type: 'https://errors.example/FST_ASYNC_ROUTE_BODY_TOO_LARGE' })
  // maxPending: the first holds the slot, the second is rendered, retry-after stays.
  const holder = request(`${url}/full`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the slot to be taken')
  const overloaded = await request(`${url}/full`)
  t.equal(overloaded.statusCode, 503)
  t.equal(overloaded.headers['content-type'], PROBLEM)
  t.equal(overloaded.headers['retry-after'], '1')
  t.match(JSON.parse(overloaded.body), { type: 'https://errors.example/FST_ASYNC_ROUTE_OVERLOADED', status: 503 })
  release()
  t.equal((await holder).body, 'done')

  // The outcome stays what it was.
  t.match(app.asyncRoute.stats(), { timedOut: 2, failed: 6, finished: 1, rejected: 1, pending: 0 })
})

t.test('renderError renders the close 503', async (t) => {
  const app = Fastify()
  await app.register(asyncRoute, { renderError: problem, timeout: 0, closeGrace: 100 })
  app.asyncRoute({ method: 'GET', url: '/', handler: () => {} })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const answer = request(`${url}/`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the reply to be pending')
  await app.close()
  const res = await answer
  t.equal(res.statusCode, 503)
  t.equal(res.headers['content-type'], PROBLEM)
  t.match(JSON.parse(res.body), { type: 'https://errors.example/FST_ASYNC_ROUTE_CLOSING' })
})

t.test('renderError that throws, does not finish, or only writes: the default answer; a route overrides the plugin', async (t) => {
  const throws: RenderError = () => { throw new Error('renderer broke') }
  const forgets: RenderError = (_error, _request, reply) => { reply.status(418).header('x-rendered', 'half') }
  const writes: RenderError = (_error, _request, reply) => { reply.write('partial') }
  const { url, logs } = await startApp(t, { renderError: problem }, (app) => {
    const fail = (_request: unknown, reply: AsyncReply): void => reply.fail(Object.assign(new Error('teapot'), { statusCode: 400, code: 'APP_BAD' }))
    app.asyncRoute({ method: 'GET', url: '/throws', renderError: throws, handler: fail })
    app.asyncRoute({ method: 'GET', url: '/forgets', renderError: forgets, handler: fail })
    app.asyncRoute({ method: 'GET', url: '/writes', renderError: writes, handler: fail })
    app.asyncRoute({ method: 'GET', url: '/own', renderError: (error: AsyncRouteError, _request, reply) => reply.status(error.statusCode).finish(`own ${error.code}`), handler: fail })
  })
  for (const path of ['/throws', '/forgets', '/writes']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 400, path)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8', `${path}: the default answer`)
    t.same(JSON.parse(res.body), { statusCode: 400, code: 'APP_BAD', error: 'Bad Request', message: 'teapot' })
    t.equal(res.headers['x-rendered'], undefined, `${path}: nothing of the renderer's head`)
  }
  t.ok(logsAt(logs, LEVEL.error, 'renderError threw').length === 1, 'a throw is logged')
  t.equal(logsAt(logs, LEVEL.warn, 'renderError did not finish').length, 2, 'a forgotten finish is logged (write() is ignored: the reply has ended)')
  const own = await request(`${url}/own`)
  t.equal(own.body, 'own APP_BAD', 'the route\'s renderError replaces the plugin\'s')
})

t.test('renderError is checked at register and at asyncRoute(); its answers are never compressed; app.inject() sees them', async (t) => {
  const bad = Fastify()
  await t.rejects(async () => { await bad.register(asyncRoute, { renderError: 'yes' } as never) }, { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /renderError/ })
  const app = Fastify()
  await app.register(asyncRoute, { renderError: problem, compress: { threshold: 0 } })
  t.throws(() => app.asyncRoute({ method: 'GET', url: '/x', renderError: 42 as never, handler: () => {} }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: /renderError/ })
  app.asyncRoute({ method: 'GET', url: '/', handler: () => { throw new Error('x'.repeat(3000)) } })
  const res = await app.inject({ url: '/', headers: { 'accept-encoding': 'gzip' } })
  t.equal(res.statusCode, 500)
  t.equal(res.headers['content-type'], PROBLEM)
  t.equal(res.headers['content-encoding'], undefined, 'error answers are never compressed')
  t.match(res.json(), { status: 500 })
  await app.close()
})

t.test('on the maxPending 503, a renderer that writes or fails instead of finishing changes nothing: the default answer, the counts intact', async (t) => {
  let release = (): void => {}
  const misbehaves: RenderError = (error, _request, reply) => {
    reply.write('partial')
    reply.fail(error)
  }
  const { url, app } = await startApp(t, { renderError: misbehaves, timeout: 0 }, (app) => {
    app.asyncRoute({ method: 'GET', url: '/full', maxPending: 1, handler: (_request, reply) => { release = () => reply.finish('done') } })
  })
  const holder = request(`${url}/full`)
  await waitFor(() => app.asyncRoute.stats().pending === 1, 2000, 'the slot to be taken')
  const overloaded = await request(`${url}/full`)
  t.equal(overloaded.statusCode, 503)
  t.equal(overloaded.headers['retry-after'], '1')
  t.equal(JSON.parse(overloaded.body).code, 'FST_ASYNC_ROUTE_OVERLOADED')
  release()
  await holder
  t.match(app.asyncRoute.stats(), { started: 1, finished: 1, rejected: 1, failed: 0, pending: 0 })
})
