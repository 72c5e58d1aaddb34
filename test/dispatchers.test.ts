// The `dispatcher` plugin option: a user's dispatcher carries fetch, pipe and upstream and is
// left open by app.close(); the plugin's own is closed; a dispatcher that fails or is
// hand-written (dispatch() alone) maps to the usual answers.
import t from 'tap'
import { Agent, request as undiciRequest, type Dispatcher } from 'undici'
import { OriginDeniedError } from '../plugin/index.js'
import { startApp, startRoute } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

/** An Agent that counts the requests dispatched through it. */
class CountingAgent extends Agent {
  dispatched = 0
  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.dispatched++
    return super.dispatch(options, handler)
  }
}

t.test('a user dispatcher is used by fetch, pipe and upstream, and app.close() does not close it', async (t) => {
  const up = await upstreamFor(t, (req, res) => res.end(`hello ${req.url}`))
  const dispatcher = new CountingAgent()
  t.teardown(() => dispatcher.destroy())
  const { url, app } = await startApp(t, { dispatcher }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/fetch',
      async handler (_request, reply) {
        const res = await reply.fetch(`${up.origin}/a`)
        reply.finish(await res.body.text())
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/pipe',
      handler (_request, reply) {
        return reply.pipe(`${up.origin}/b`)
      }
    })
    app.asyncRoute({
      method: 'GET',
      url: '/upstream',
      upstream: `${up.origin}/c`,
      handler (_request, reply, res) {
        return reply.pipe(res!)
      }
    })
  })
  t.equal((await request(`${url}/fetch`)).body, 'hello /a')
  t.equal((await request(`${url}/pipe`)).body, 'hello /b')
  t.equal((await request(`${url}/upstream`)).body, 'hello /c')
  t.equal(dispatcher.dispatched, 3, 'every upstream request went through the user dispatcher')
  t.equal(up.openSockets(), 1, 'its pool keeps the connection')
  await app.close()
  t.notOk(dispatcher.closed, 'the user dispatcher is not closed')
  t.notOk(dispatcher.destroyed, 'nor destroyed')
  t.equal(up.openSockets(), 1, 'its pooled connection is still open')
  const after = await undiciRequest(`${up.origin}/after`, { dispatcher })
  t.equal(await after.body.text(), 'hello /after', 'it still works after app.close()')
  t.equal(dispatcher.dispatched, 4)
})

t.test('the plugin\'s own dispatcher is closed by app.close(): its upstream sockets get closed', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('pooled'))
  const { url, app } = await startRoute(t, {}, async (_request, reply) => {
    const res = await reply.fetch(up.url)
    reply.finish(await res.body.text())
  })
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal((await request(`${url}/`)).body, 'pooled')
  t.equal(up.connections(), 1, 'one keep-alive connection, reused')
  t.equal(up.openSockets(), 1, 'kept open in the plugin\'s pool')
  await app.close()
  // undici keeps this idle socket about 3 s (the upstream's keep-alive hint less its 2 s
  // margin): closing within 1.5 s is app.close(), not that timeout.
  await waitFor(() => up.openSockets() === 0, 1500, 'the pooled upstream socket to close')
  t.equal(up.openSockets(), 0)
})

// A dispatcher that throws before connecting: the error is mapped like undici's own.
const dispatcherFailures = [
  { name: 'a code-less error gives 502', error: () => new Error('interceptor broke'), status: 502, code: 'FST_ASYNC_ROUTE_UPSTREAM_ERROR' },
  { name: 'ETIMEDOUT gives 504', error: () => Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' }), status: 504, code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT' },
  { name: 'one of the plugin\'s own errors keeps that error', error: () => new OriginDeniedError(), status: 500, code: 'FST_ASYNC_ROUTE_ORIGIN_DENIED' },
  { name: 'a connect timeout gives 504', error: () => Object.assign(new Error('Connect Timeout Error'), { code: 'UND_ERR_CONNECT_TIMEOUT' }), status: 504, code: 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT' }
]

for (const failure of dispatcherFailures) {
  t.test(`a user dispatcher failing with ${failure.name}`, async (t) => {
    const up = await upstreamFor(t)
    const dispatcher = new Agent().compose(() => () => { throw failure.error() })
    t.teardown(() => dispatcher.destroy())
    const { url } = await startRoute(t, { dispatcher }, async (_request, reply) => {
      await reply.fetch(up.url)
      reply.finish('unexpected')
    })
    const res = await request(`${url}/`)
    t.equal(res.statusCode, failure.status)
    t.equal(JSON.parse(res.body).code, failure.code)
    t.equal(up.connections(), 0, 'nothing reached the upstream')
  })
}

t.test('a hand-written dispatcher: one with dispatch() alone works; one whose request() throws gives 502', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('through dispatch'))
  const agent = new Agent()
  t.teardown(() => agent.close())
  const plain = { dispatch: (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) => agent.dispatch(options, handler) } as unknown as Agent
  const { url } = await startRoute(t, { dispatcher: plain }, async (_request, reply) => { reply.finish(await (await reply.fetch(up.url)).body.text()) })
  t.equal((await request(`${url}/`)).body, 'through dispatch')
  const throwing = { dispatch () { return true }, request () { throw new Error('request exploded') } } as unknown as Agent
  const { url: other } = await startRoute(t, { dispatcher: throwing }, async (_request, reply) => { await reply.fetch(up.url) })
  const res = await request(`${other}/`)
  t.equal(res.statusCode, 502)
  t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR')
})
