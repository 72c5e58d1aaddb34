// `npm run chat`: the long-polling chat on http://127.0.0.1:8888/ (or $PORT). Open it in two
// browser windows and post from one. No internet needed.
//
// The room lives in this process's memory, unless `REDIS_URL` is set (`redis://127.0.0.1:6379`):
// then it is shared through Redis with every other process started the same way — several
// `PORT`s behind a load balancer, or `npm run chat:cluster` (cluster.ts).
import { buildChatApp, MessageBuffer, type Room } from './chat.js'
import { RedisRoom } from './redis-room.js'

const url = process.env.REDIS_URL
const redis = url === undefined || url === '' ? undefined : new RedisRoom({ url })
const room: Room = redis ?? new MessageBuffer()
const app = await buildChatApp({ room })
if (redis !== undefined) {
  redis.log = app.log
  // Listen even when Redis is not there yet: posts answer 503 until it is.
  if (!await redis.ready(2_000)) app.log.warn(`chat room: no history from ${url} yet; listening anyway`)
}
const address = await app.listen({ port: Number(process.env.PORT ?? 8888), host: '127.0.0.1' })
const shared = redis === undefined ? '' : `, room shared through ${url}`
console.log(`chat listening on ${address}/ (open it in two browser windows${shared})`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.close().then(() => redis?.close()).then(() => process.exit(0), () => process.exit(1))
  })
}
