// Type tests: the `dispatcher` option takes undici 7's and undici 8's dispatchers alike, plain
// or composed with interceptors, under `strict` (tsconfig.json). Checked by `npm run
// typecheck`; never run.
import Fastify from 'fastify'
import * as undici7 from 'undici'
import * as undici8 from 'undici8'
import asyncRoute from 'fastify-async-route'

const app = Fastify()

// undici 8
await app.register(asyncRoute, { dispatcher: new undici8.Agent() })
await app.register(asyncRoute, { dispatcher: new undici8.Pool('http://127.0.0.1:8080') })
await app.register(asyncRoute, { dispatcher: new undici8.Client('http://127.0.0.1:8080') })
await app.register(asyncRoute, { dispatcher: new undici8.Agent().compose(undici8.interceptors.retry()) })
await app.register(asyncRoute, { dispatcher: new undici8.Pool('http://127.0.0.1:8080').compose(undici8.interceptors.retry(), undici8.interceptors.redirect()) })
await app.register(asyncRoute, { dispatcher: new undici8.ProxyAgent('http://127.0.0.1:3128') })
await app.register(asyncRoute, { dispatcher: new undici8.RetryAgent(new undici8.Agent()) })
await app.register(asyncRoute, { dispatcher: undici8.getGlobalDispatcher() })

// undici 7, still
await app.register(asyncRoute, { dispatcher: new undici7.Agent() })
await app.register(asyncRoute, { dispatcher: new undici7.Pool('http://127.0.0.1:8080') })
await app.register(asyncRoute, { dispatcher: new undici7.Client('http://127.0.0.1:8080') })
await app.register(asyncRoute, { dispatcher: new undici7.Agent().compose(undici7.interceptors.retry()) })
await app.register(asyncRoute, { dispatcher: new undici7.Pool('http://127.0.0.1:8080').compose(undici7.interceptors.retry(), undici7.interceptors.redirect()) })
await app.register(asyncRoute, { dispatcher: new undici7.ProxyAgent('http://127.0.0.1:3128') })
await app.register(asyncRoute, { dispatcher: new undici7.RetryAgent(new undici7.Agent()) })

// Not a dispatcher.
// @ts-expect-error an object without dispatch()
await app.register(asyncRoute, { dispatcher: { request () {} } })
// @ts-expect-error a URL is not a dispatcher
await app.register(asyncRoute, { dispatcher: 'http://127.0.0.1:8080' })
