// What plugin/undici-adapter.ts relies on in undici, checked against every undici major this
// Node line can run (7 always; 8 on Node >= 22.19). When an undici release changes one of
// these, this file fails first and says which part of the adapter to revisit.
import { readFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { createRequire } from 'node:module'
import path from 'node:path'
import t from 'tap'
import * as undici7 from 'undici'
import { adoptBody, discardBody, RequestSignal, sendRequest, StreamingRequest, type Dispatcher, type ResponseBody } from '../../plugin/undici-adapter.js'
import { upstreamFor } from '../helpers/upstream.js'

const KNOWN_MAJORS = [7, 8]

interface UndiciModule { Agent: new (options?: { connections?: number }) => Dispatcher & { close: () => Promise<void>, destroy: () => Promise<void> } }

/** The major version of an installed package (its package.json is not in its `exports`). */
function majorOf (name: string): number {
  const entry = createRequire(import.meta.url).resolve(name)
  const manifest = path.join(entry.slice(0, entry.lastIndexOf(`${path.sep}${name}${path.sep}`) + name.length + 2), 'package.json')
  return Number((JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version.split('.')[0])
}

async function majors (): Promise<Array<[string, UndiciModule, number]>> {
  const list: Array<[string, UndiciModule, number]> = [['undici', undici7 as unknown as UndiciModule, majorOf('undici')]]
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  if (major > 22 || (major === 22 && minor >= 19)) {
    list.push(['undici8', await import('undici8') as unknown as UndiciModule, majorOf('undici8')])
  }
  return list
}

class Recorder extends StreamingRequest {
  readonly events: string[] = []
  status = 0
  headers: IncomingHttpHeaders = {}
  body = ''
  readonly done: Promise<void>
  #settle!: () => void
  pauseFirst = false
  /** pause() after the first chunk (which returns true), resume() 60 ms later; chunks seen meanwhile. */
  pauseLater = false
  seenWhilePaused = -1

  constructor () {
    super()
    this.done = new Promise((resolve) => { this.#settle = resolve })
  }

  protected received (statusCode: number, headers: IncomingHttpHeaders): void {
    this.events.push('head')
    this.status = statusCode
    this.headers = headers
  }

  protected chunk (chunk: Buffer): boolean {
    this.events.push('data')
    this.body += chunk.toString()
    if (this.pauseFirst) {
      this.pauseFirst = false
      setTimeout(() => this.resume(), 20)
      return false
    }
    if (this.pauseLater) {
      this.pauseLater = false
      setImmediate(() => {
        this.pause()
        const before = this.events.length
        setTimeout(() => {
          this.seenWhilePaused = this.events.length - before
          this.resume()
        }, 60)
      })
    }
    return true
  }

  protected completed (): void {
    this.events.push('end')
    this.#settle()
  }

  protected failed (error: Error): void {
    this.events.push(`error ${error.name}`)
    this.#settle()
  }

  stop (): void {
    this.cancel()
  }

  get handedToConnection (): boolean {
    return this.started
  }
}

class Signal extends RequestSignal {
  abort (): void {
    this.abortRequest()
  }
}

t.test('the undici majors installed are ones the adapter knows', async (t) => {
  for (const [name, , major] of await majors()) {
    t.ok(KNOWN_MAJORS.includes(major), `${name} is undici ${major}`)
  }
})

t.test('dispatch() with a current-API handler: head as an object, data with pause/resume, end', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.setHeader('x-a', ['1', '2'])
    res.write('one,')
    setTimeout(() => res.end('two'), 10)
  })
  for (const [name, undici] of await majors()) {
    const agent = new undici.Agent()
    const recorder = new Recorder()
    recorder.pauseFirst = true
    recorder.dispatchOn(agent, { origin: up.origin, path: '/', method: 'GET' })
    await recorder.done
    t.equal(recorder.status, 200, name)
    t.same(recorder.headers['x-a'], ['1', '2'], `${name}: repeated headers as a list`)
    t.equal(recorder.body, 'one,two', `${name}: the whole body after a pause`)
    t.same([recorder.events[0], recorder.events.at(-1)], ['head', 'end'])
    await agent.close()
  }
})

t.test('pause() from outside the data callback holds the rest of the body until resume(): at most the chunk being delivered gets through', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.write('one,')
    setTimeout(() => res.write('two,'), 15)
    setTimeout(() => res.write('three,'), 30)
    setTimeout(() => res.end('four'), 45)
  })
  for (const [name, undici] of await majors()) {
    const agent = new undici.Agent()
    const recorder = new Recorder()
    recorder.pauseLater = true
    recorder.dispatchOn(agent, { origin: up.origin, path: '/', method: 'GET' })
    await recorder.done
    t.equal(recorder.body, 'one,two,three,four', `${name}: the whole body after the pause`)
    t.ok(recorder.seenWhilePaused >= 0 && recorder.seenWhilePaused <= 1, `${name}: ${recorder.seenWhilePaused} chunk(s) while paused (three were sent meanwhile)`)
    await agent.close()
  }
})

t.test('cancel() before and after the request started ends it with an error, once', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.write('part') })
  for (const [name, undici] of await majors()) {
    const agent = new undici.Agent()
    const early = new Recorder()
    early.stop()
    early.dispatchOn(agent, { origin: up.origin, path: '/', method: 'GET' })
    await early.done
    t.match(early.events, [/^error/], `${name}: cancelled before it started`)
    const late = new Recorder()
    late.dispatchOn(agent, { origin: up.origin, path: '/', method: 'GET' })
    while (!late.events.includes('data')) await new Promise((resolve) => setTimeout(resolve, 5))
    late.stop()
    await late.done
    t.match(late.events, ['head', 'data', /^error/], `${name}: cancelled mid-body`)
    await agent.destroy()
  }
})

t.test('onRequestStart only once a connection takes the request: not while it waits in its pool (the hang report\'s "queued")', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    if (req.url !== '/held') res.end('ok')
  })
  for (const [name, undici] of await majors()) {
    const agent = new undici.Agent({ connections: 1 })
    const held = new Recorder()
    const requests = up.requests.length
    held.dispatchOn(agent, { origin: up.origin, path: '/held', method: 'GET' })
    while (up.requests.length === requests) await new Promise((resolve) => setTimeout(resolve, 5))
    t.equal(held.handedToConnection, true, `${name}: the request on the connection was started`)
    const queued = new Recorder()
    queued.dispatchOn(agent, { origin: up.origin, path: '/queued', method: 'GET' })
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(queued.handedToConnection, false, `${name}: the one waiting for the pool's only connection was not`)
    held.stop()
    await queued.done
    t.equal(queued.handedToConnection, true, `${name}: started once the connection was free`)
    t.equal(queued.body, 'ok')
    await agent.destroy()
  }
})

t.test("request() through the dispatcher's own method, with the plugin's signal look-alike", async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    if (req.url === '/hang') return
    res.end('answer')
  })
  for (const [name, undici] of await majors()) {
    const agent = new undici.Agent()
    const response = await new Promise<{ statusCode: number, body: { text: () => Promise<string> } }>((resolve, reject) => {
      sendRequest(agent, { origin: up.origin, path: '/', method: 'GET', signal: new Signal() }, (error, res) => error === null ? resolve(res as never) : reject(error))
    })
    t.equal(response.statusCode, 200, name)
    t.equal(await response.body.text(), 'answer')
    const signal = new Signal()
    const failed = new Promise<Error>((resolve) => {
      sendRequest(agent, { origin: up.origin, path: '/hang', method: 'GET', signal }, (error) => resolve(error as Error))
    })
    setTimeout(() => signal.abort(), 20)
    t.match(await failed, { code: 'UND_ERR_ABORTED' }, `${name}: the signal aborts the request`)
    const refused = await new Promise<Error>((resolve) => {
      sendRequest(agent, { origin: up.origin, path: '/', method: 'GET', headers: { 'transfer-encoding': 'chunked' } }, (error) => resolve(error as Error))
    })
    t.match(refused, { code: 'UND_ERR_INVALID_ARG' }, `${name}: a refused header is an invalid-argument error`)
    await agent.close()
  }
})

/** `request()` through `agent`, resolved with its response (or rejected with its error). */
async function requestOn (agent: Dispatcher, origin: string, path: string): Promise<{ statusCode: number, body: ResponseBody }> {
  return await new Promise((resolve, reject) => {
    sendRequest(agent, { origin, path, method: 'GET' }, (error, res) => error === null ? resolve(res as never) : reject(error))
  })
}

t.test("a response body's push carries every chunk, and its close comes once (adoptBody); dump() frees the connection (discardBody)", async (t) => {
  const sockets = new Set<unknown>()
  const up = await upstreamFor(t, (req, res) => {
    sockets.add(req.socket)
    if (req.url === '/big') {
      // Three writes a tick apart: several chunks reach the body.
      res.write('a'.repeat(16 * 1024))
      setTimeout(() => res.write('b'.repeat(16 * 1024)), 5)
      setTimeout(() => res.end('c'.repeat(16 * 1024)), 10)
      return
    }
    res.end('small')
  })
  for (const [name, undici] of await majors()) {
    sockets.clear()
    const agent = new undici.Agent({ connections: 1 })
    const owner = { chunks: 0, closed: 0, bodyChunk () { this.chunks++ }, bodyClosed () { this.closed++ } }
    const response = await requestOn(agent, up.origin, '/big')
    adoptBody(response.body, owner, true)
    let read = 0
    for await (const chunk of response.body) read += (chunk as Buffer).length
    t.equal(read, 48 * 1024, `${name}: the body is whole`)
    t.ok(owner.chunks >= 2, `${name}: each chunk went through push (${owner.chunks})`)
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(owner.closed, 1, `${name}: closed once`)
    const unwatched = { chunks: 0, closed: 0, bodyChunk () { this.chunks++ }, bodyClosed () { this.closed++ } }
    const unread = await requestOn(agent, up.origin, '/big')
    adoptBody(unread.body, unwatched, false)
    discardBody(unread.body)
    const next = await requestOn(agent, up.origin, '/')
    t.equal(await next.body.text(), 'small', `${name}: the next request got the connection`)
    t.equal(unwatched.chunks, 0, `${name}: chunks are told only when asked`)
    t.equal(unwatched.closed, 1, `${name}: a discarded body closes`)
    t.equal(sockets.size, 1, `${name}: one connection served all three`)
    await agent.close()
  }
})
