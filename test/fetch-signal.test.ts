// A caller's own `signal` on reply.fetch(): it cancels that request only, and the reply's end
// still cancels it too.
import t from 'tap'
import { startApp } from './helpers/app.js'
import { request, waitFor } from './helpers/client.js'
import { socketClosed, upstreamFor } from './helpers/upstream.js'

t.test("a caller's signal cancels its fetch: it rejects with the signal's reason, the upstream request is closed, the reply is untouched", async (t) => {
  const up = await upstreamFor(t, () => {})
  const { url } = await startApp(t, { timeout: 5000 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        try {
          await reply.fetch(up.url, { signal: AbortSignal.timeout(80) })
          reply.finish('answered')
        } catch (error) {
          reply.finish(`own deadline: ${(error as Error).name}`)
        }
      }
    })
  })
  const res = await request(`${url}/`)
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'own deadline: TimeoutError')
  const [upstreamRequest] = up.requests
  t.ok(upstreamRequest !== undefined, 'the request had reached the upstream')
  await socketClosed(upstreamRequest as NonNullable<typeof upstreamRequest>)
  t.pass('and the upstream saw it closed')
})

t.test('an already aborted signal rejects at once without connecting', async (t) => {
  const up = await upstreamFor(t)
  const { url } = await startApp(t, {}, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      handler (_request, reply) {
        const controller = new AbortController()
        controller.abort(new Error('never mind'))
        reply.fetch(up.url, { signal: controller.signal }, (err) => reply.finish(err?.message ?? 'no error'))
      }
    })
  })
  t.equal((await request(`${url}/`)).body, 'never mind')
  t.equal(up.connections(), 0)
})

t.test('aborted after the head arrived, the body stops with the reason', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.write('part') })
  const { url } = await startApp(t, { timeout: 5000 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        const controller = new AbortController()
        const res = await reply.fetch(up.url, { signal: controller.signal })
        controller.abort(new Error('enough'))
        try {
          await res.body.text()
          reply.finish('whole')
        } catch (error) {
          reply.finish(`body: ${(error as Error).message}`)
        }
      }
    })
  })
  t.equal((await request(`${url}/`)).body, 'body: enough')
})

t.test("the reply's end still cancels a fetch that has a caller's signal; the finished fetch leaves no listener", async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    if (req.url === '/fast') res.end('fast')
  })
  const controller = new AbortController()
  let code: unknown
  const { url } = await startApp(t, { timeout: 80 }, (app) => {
    app.asyncRoute({
      method: 'GET',
      url: '/',
      async handler (_request, reply) {
        const fast = await reply.fetch(`${up.origin}/fast`, { signal: controller.signal })
        await fast.body.text()
        try {
          await reply.fetch(`${up.origin}/slow`, { signal: controller.signal })
        } catch (error) {
          code = (error as { code?: unknown }).code
        }
      }
    })
  })
  t.equal((await request(`${url}/`)).statusCode, 504)
  await waitFor(() => code !== undefined, 2000, 'the fetch to reject')
  t.equal(code, 'FST_ASYNC_ROUTE_CANCELLED')
  t.notOk(controller.signal.aborted, "the caller's signal is untouched")
  // Aborting it now reaches no request of an ended reply (and throws nothing).
  controller.abort()
})
