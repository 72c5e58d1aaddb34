// What the shared chat room costs Redis (`node --import tsx bench/redis-fanout.ts`): a
// redis-server of its own (persistence off, core 0), P readers (RedisRoom instances, each with
// its blocking XREAD connection, as P server processes would have), and M posts one after the
// other through the post script. Redis's CPU (`INFO cpu`) over the posts, per post: the script
// once plus one XREAD answer per reader. No waiting pages: what the processes do with a message
// is the waiters benchmark's business. Options: --posts=M --readers=1,8,32.
import { spawnSync } from 'node:child_process'
import os from 'node:os'
import { Redis } from 'ioredis'
import { RedisRoom } from '../examples/chat/redis-room.js'
import { startRedis, REDIS_SERVER } from '../test/helpers/redis.js'

const option = (name: string, fallback: string): string =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const posts = Number(option('posts', '3000'))
const readerCounts = option('readers', '1,8,32').split(',').map(Number)
const quiet = { info: () => {}, warn: (message: string) => console.error(message) }

const stops: Array<() => unknown> = []
const server = await startRedis({ teardown: (fn) => stops.push(fn) })
spawnSync('taskset', ['-p', '-c', '0', String(server.pid)], { stdio: 'ignore' })
const admin = new Redis(server.url)
const cpuMs = async (): Promise<number> => {
  const info = await admin.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN)
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1000
}
const version = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' }).stdout.match(/v=(\S+)/)?.[1] ?? '?'
console.log(`# redis fan-out: ${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} cores, Node ${process.version}, redis-server ${version}; ${posts} posts of 40 bytes, one after the other\n`)
console.log('| readers (processes) | Redis CPU per post | per post and reader | posts/s of one Redis core at this cost |')
console.log('| ---: | ---: | ---: | ---: |')
try {
  for (const readers of readerCounts) {
    await admin.del('chat:messages')
    const rooms = Array.from({ length: readers }, () => new RedisRoom({ url: server.url, log: quiet }))
    const writer = new RedisRoom({ url: server.url, log: quiet })
    await Promise.all([writer, ...rooms].map(async (room) => await room.ready(10_000)))
    for (let n = 0; n < 200; n++) await writer.add('warm-up') // the script cached, the stream full
    await new Promise((resolve) => setTimeout(resolve, 300))
    const before = await cpuMs()
    let last = 0
    for (let n = 0; n < posts; n++) last = (await writer.add('a message of about forty bytes, say hi!')).id
    while (rooms.some((room) => room.buffer.lastId < last)) await new Promise((resolve) => setTimeout(resolve, 5))
    const per = (await cpuMs() - before) * 1000 / posts // µs
    console.log(`| ${readers} | ${per.toFixed(1)} µs | ${(per / readers).toFixed(1)} µs | ${Math.round(1e6 / per).toLocaleString('en-US')} |`)
    await Promise.all([writer, ...rooms].map(async (room) => await room.close()))
  }
} finally {
  await admin.quit()
  for (const stop of stops) await stop()
}
console.log(`\nload average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
