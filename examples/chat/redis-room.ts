// The chat room shared by every process through Redis (`REDIS_URL`): a Redis stream holds the
// messages, and each process mirrors it.
//
// - Posting: one script, `XADD <key> MAXLEN ~ 200 <id>-0 body … at …`. The id is Redis's clock
//   in microseconds, or one more than the stream's newest id if that is higher: ids keep rising
//   on every process, and keep rising when Redis comes back empty (no persistence), so a page's
//   cursor (the id of the last message it has) stays valid on every process and across an
//   outage. (That rests on the Redis host's clock not going back.)
// - Reading: one connection per process blocks on `XREAD … STREAMS <key> <last id>`; what it
//   reads goes into the process's `MessageBuffer` (a mirror), which wakes that process's
//   waiters. On every (re)connection the mirror first takes the stream's history as it is
//   (`XREVRANGE`): a process started later shows the same history as the others.
// - Faults: commands never queue while Redis is unreachable, so a post fails at once (the
//   route answers 503) and nothing piles up; polls keep being answered at their timeout by the
//   route's watchdog; the client reconnects by itself, and the outage is logged once, as is
//   the recovery.
import { Redis } from 'ioredis'
import type { AsyncReply } from 'fastify-async-route'
import { MessageBuffer, type Message, type Room } from './room.js'

/** How long one blocking read waits before it is sent again, ms. */
const BLOCK_MS = 5_000
/** At most this many messages per read. */
const READ_COUNT = 1_000

// KEYS[1] the stream; ARGV: body, at (ms), history size. Returns the new id.
const POST = `
local t = redis.call('TIME')
local id = tonumber(t[1]) * 1000000 + tonumber(t[2])
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local newestId = tonumber(string.match(newest[1], '^%d+'))
  if newestId >= id then id = newestId + 1 end
end
local entry = string.format('%.0f', id)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], entry .. '-0', 'body', ARGV[1], 'at', ARGV[2])
return entry`

/** Where the room logs its outages (a pino logger such as `app.log`, or `console`). */
export interface RoomLog {
  info: (message: string) => void
  warn: (message: string) => void
}

export interface RedisRoomOptions {
  /** `redis://host:port` (`REDIS_URL`). */
  url: string
  /** The stream's key: one stream per room. */
  key?: string
  /** How many messages the history keeps. */
  size?: number
  /** A post fails when Redis has not answered it within this many ms. */
  commandTimeout?: number
  /** At most this long between two attempts to reconnect, ms. */
  maxRetryDelay?: number
  log?: RoomLog
}

type Entry = [id: string, fields: string[]]

function toMessage ([id, fields]: Entry): Message {
  const field = (name: string): string => fields[fields.indexOf(name) + 1] ?? ''
  return { id: Number(id.slice(0, id.indexOf('-'))), body: field('body'), at: Number(field('at')) }
}

export class RedisRoom implements Room {
  /** This process's mirror of the stream, and its waiting replies. */
  readonly buffer: MessageBuffer
  readonly key: string
  log: RoomLog
  #writer: Redis
  #reader: Redis
  #closed = false
  #reading: Promise<void>
  #up: boolean | undefined // unknown until the first success or failure
  #synced = false
  #onSynced: Array<() => void> = []
  #onChange: Array<() => void> = []

  constructor (options: RedisRoomOptions) {
    this.key = options.key ?? 'chat:messages'
    this.buffer = new MessageBuffer(options.size ?? 200, true)
    this.log = options.log ?? console
    const maxDelay = options.maxRetryDelay ?? 1_000
    const connection = {
      // No queue: while Redis is unreachable a command fails at once, and one in flight when
      // the connection drops fails then (never resent later).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: (attempt: number) => Math.min(100 * attempt, maxDelay),
      lazyConnect: false
    }
    this.#writer = new Redis(options.url, { ...connection, commandTimeout: options.commandTimeout ?? 1_000, connectionName: 'chat-writer' })
    this.#reader = new Redis(options.url, { ...connection, connectionName: 'chat-reader' })
    this.#writer.defineCommand('chatPost', { numberOfKeys: 1, lua: POST })
    for (const client of [this.#writer, this.#reader]) {
      // ioredis reports each failed reconnection: the outage is logged once, below.
      client.on('error', (error: Error) => this.#down(error))
      client.on('ready', () => this.#changed())
      client.on('close', () => this.#changed())
    }
    this.#reading = this.#read()
  }

  get waiting (): number {
    return this.buffer.waiting
  }

  since (cursor: number): Message[] {
    return this.buffer.since(cursor)
  }

  wait (reply: AsyncReply, cursor: number): void {
    this.buffer.wait(reply, cursor)
  }

  leave (reply: AsyncReply): void {
    this.buffer.leave(reply)
  }

  /**
   * Appends the message to the stream and resolves with it; every process's reader (this
   * one's too) then wakes its waiters. Rejects at once while Redis is unreachable.
   */
  async add (body: string): Promise<Message> {
    const at = Date.now()
    try {
      const id = await (this.#writer as unknown as { chatPost: (key: string, ...args: Array<string | number>) => Promise<string> })
        .chatPost(this.key, body, at, this.buffer.size)
      this.#back()
      return { id: Number(id), body, at }
    } catch (error) {
      this.#down(error as Error)
      throw error
    }
  }

  /** Resolves `true` once the history has been read from Redis, `false` after `ms` without. */
  async ready (ms: number): Promise<boolean> {
    if (this.#synced) return true
    let timer: NodeJS.Timeout | undefined
    const synced = await Promise.race([
      new Promise<boolean>((resolve) => this.#onSynced.push(() => resolve(true))),
      new Promise<boolean>((resolve) => { timer = setTimeout(resolve, ms, false) })
    ])
    clearTimeout(timer)
    return synced
  }

  /** Stops reading and closes both connections (the waiting replies are the app's to end). */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#changed()
    this.#reader.disconnect()
    this.#writer.disconnect()
    await this.#reading
  }

  /** The reader: on each (re)connection the history, then the new messages as they come. */
  async #read (): Promise<void> {
    let after = 0 // the last id read
    while (!this.#closed) {
      if (this.#reader.status !== 'ready') {
        await this.#change()
        continue
      }
      try {
        if (!this.#synced) {
          const newestFirst = await this.#reader.xrevrange(this.key, '+', '-', 'COUNT', this.buffer.size) as Entry[]
          this.buffer.reset(newestFirst.reverse().map(toMessage))
          after = this.buffer.lastId
          this.#synced = true
          this.#back()
          for (const resolve of this.#onSynced.splice(0)) resolve()
        }
        const read = await this.#reader.xread('COUNT', READ_COUNT, 'BLOCK', BLOCK_MS, 'STREAMS', this.key, `${after}-0`) as Array<[string, Entry[]]> | null
        const entries = read?.[0]?.[1] ?? []
        if (entries.length > 0) {
          const messages = entries.map(toMessage)
          after = (messages[messages.length - 1] as Message).id
          this.buffer.receive(messages)
        }
      } catch (error) {
        if (this.#closed) break
        this.#synced = false // read the history again once reconnected
        this.#down(error as Error)
        // Dropped connection: wait for the next one. Anything else (a wrong key type, say): a pause.
        if (this.#reader.status === 'ready') await new Promise((resolve) => setTimeout(resolve, 1_000))
      }
    }
  }

  /** Resolves at the next change of a connection's state (or on close). */
  #change (): Promise<void> {
    return new Promise((resolve) => this.#onChange.push(resolve))
  }

  #changed (): void {
    for (const resolve of this.#onChange.splice(0)) resolve()
  }

  #down (error: Error): void {
    if (this.#closed || this.#up === false) return
    this.#up = false
    // A command cut off by the dropped connection says so in ioredis's words: say it in ours.
    const reason = error.name === 'MaxRetriesPerRequestError' ? 'connection lost' : error.message
    this.log.warn(`chat room: Redis unreachable (${reason}); posts answer 503 until it is back`)
  }

  #back (): void {
    if (this.#up === false) this.log.info('chat room: Redis reachable again')
    this.#up = true
  }
}
