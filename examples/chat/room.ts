// The chat's room: the last messages, and the replies waiting for the next one. The long-poll
// route only needs `Room`; two rooms implement it:
//
// - `MessageBuffer` (here): the room in this process's memory, Tornado's `MessageBuffer`. The
//   default: nothing to configure, but each process has its own room.
// - `RedisRoom` (redis-room.ts): the room shared by every process through a Redis stream. Each
//   process keeps a `MessageBuffer` as its mirror of the stream, holding its own waiters.
import type { AsyncReply } from 'fastify-async-route'

/** How many waiting replies are answered per turn of the event loop. */
const WAKE_BATCH = 1_000

export interface Message {
  id: number
  body: string
  /** When the server received it, ms since the epoch. */
  at: number
}

/** What the chat's routes need of a room. */
export interface Room {
  /** How many replies are waiting for a message (in this process). */
  readonly waiting: number
  /** The messages newer than `cursor` (the id of the last message the page has). */
  since: (cursor: number) => Message[]
  /** Keeps `reply` open until a message newer than `cursor` exists. */
  wait: (reply: AsyncReply, cursor: number) => void
  /** Takes `reply` off the waiter list (it ended some other way). */
  leave: (reply: AsyncReply) => void
  /** Stores a message and wakes every page waiting for it; rejects if it cannot be stored. */
  add: (body: string) => Message | Promise<Message>
}

/** The last `size` messages and the replies waiting for the next one (Tornado's `MessageBuffer`). */
export class MessageBuffer implements Room {
  readonly cache: Message[] = []
  /** Each waiting reply, with the cursor it waits after. */
  #waiters = new Map<AsyncReply, number>()
  #lastId = 0

  /**
   * `mirror`: the messages and their ids come from elsewhere (a shared log, through
   * `receive()`), so a cursor newer than anything here names a message that has not arrived
   * here yet: such a poll waits for the next one. Otherwise ids are this buffer's own, and a
   * cursor newer than anything here comes from before a restart of the server.
   */
  constructor (readonly size = 200, readonly mirror = false) {}

  get waiting (): number {
    return this.#waiters.size
  }

  /** The id of the newest message this buffer has had (0 before the first). */
  get lastId (): number {
    return this.#lastId
  }

  /**
   * The messages newer than `cursor`. Not a mirror: a cursor newer than anything here comes
   * from before a restart of the server, and the page gets everything.
   */
  since (cursor: number): Message[] {
    if (cursor > this.#lastId && !this.mirror) cursor = 0
    const first = this.cache.findIndex((message) => message.id > cursor)
    return first === -1 ? [] : this.cache.slice(first)
  }

  wait (reply: AsyncReply, cursor: number): void {
    this.#waiters.set(reply, cursor > this.#lastId && !this.mirror ? 0 : cursor)
  }

  leave (reply: AsyncReply): void {
    this.#waiters.delete(reply)
  }

  /** Stores a message with the next id and answers every waiting reply (`notify_all()`). */
  add (body: string): Message {
    const message: Message = { id: this.#lastId + 1, body, at: Date.now() }
    this.receive([message])
    return message
  }

  /**
   * Stores messages, oldest first (those not newer than the last one here are ignored), and
   * answers every waiting reply with what it has missed. The replies are finished `WAKE_BATCH`
   * at a time, one batch per turn of the event loop, so that the answers already given go out
   * (HTTP/2 sends a session's frames between turns) while the rest are being written, and
   * other requests are served in between.
   */
  receive (messages: readonly Message[]): void {
    let added = false
    for (const message of messages) {
      if (message.id <= this.#lastId) continue
      this.#lastId = message.id
      this.cache.push(message)
      added = true
    }
    if (!added) return
    if (this.cache.length > this.size) this.cache.splice(0, this.cache.length - this.size)
    const woken = this.#waiters
    this.#waiters = new Map()
    this.#wake(woken.entries())
  }

  /**
   * Replaces the history with `messages` (the shared log as it is now, oldest first), keeping
   * the last id seen: a log that came back empty leaves an empty history here too, and its
   * new messages, with higher ids, arrive as usual. Those newer than the last one here wake
   * the waiters.
   */
  reset (messages: readonly Message[]): void {
    const known = messages.filter((message) => message.id <= this.#lastId).slice(-this.size)
    this.cache.splice(0, this.cache.length, ...known)
    this.receive(messages.filter((message) => message.id > this.#lastId))
  }

  #wake (woken: MapIterator<[AsyncReply, number]>): void {
    const answers = new Map<number, Message[]>() // most waiters share a cursor: one list for them
    for (let n = 0; n < WAKE_BATCH; n++) {
      const next = woken.next()
      if (next.done === true) return
      const [reply, cursor] = next.value
      let messages = answers.get(cursor)
      if (messages === undefined) answers.set(cursor, messages = this.since(cursor))
      // A mirror's page may be ahead of this process (it saw the message on another one):
      // it waits on for a newer message.
      if (messages.length === 0) {
        if (!reply.finished) this.#waiters.set(reply, cursor)
        continue
      }
      reply.finish({ messages }) // ignored if it ended meanwhile (browser gone, watchdog)
    }
    setImmediate(() => this.#wake(woken))
  }
}
