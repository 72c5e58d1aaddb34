// `npm start`: the Tornado example against a local feed server, on http://127.0.0.1:3000
// (or $PORT). No internet needed.
import { startFeedServer } from './feed-server.js'
import { buildTornadoApp } from './tornado.js'

const feed = await startFeedServer()
const app = await buildTornadoApp(feed.url)
app.addHook('onClose', async () => await feed.close())

const address = await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' })
console.log(`fastify-async-route example listening on ${address}/ (try: curl ${address}/)`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
}
