// `npm run chat`: the long-polling chat on http://127.0.0.1:8888/ (or $PORT). Open it in two
// browser windows and post from one. No internet needed.
import { buildChatApp } from './chat.js'

const app = await buildChatApp()
const address = await app.listen({ port: Number(process.env.PORT ?? 8888), host: '127.0.0.1' })
console.log(`chat listening on ${address}/ (open it in two browser windows)`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
}
