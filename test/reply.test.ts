// AsyncReply: the response head (status, headers) and the body methods (write, flush, finish),
// observed by a real node:http client.
import { ServerResponse, type IncomingMessage } from 'node:http'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import type { AsyncReply, AsyncRoutePluginOptions } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp, startRoute, type LogLine } from './helpers/app.js'
import { openRequest, request, sleep, waitFor } from './helpers/client.js'

const TEXT = 'text/plain; charset=utf-8'
const OCTET = 'application/octet-stream'
const JSON_TYPE = 'application/json; charset=utf-8'

// A short close grace, so that a test that fails with a reply still open does not hold close().
const OPTIONS: AsyncRoutePluginOptions = { timeout: 0, closeGrace: 100 }

/** Replies that handlers handed over to the test, to be driven from outside. */
function replyQueue () {
  const replies: AsyncReply[] = []
  return {
    push: (reply: AsyncReply) => { replies.push(reply) },
    next: async (): Promise<AsyncReply> => {
      await waitFor(() => replies.length > 0, 3000, 'the handler to run')
      return replies.shift() as AsyncReply
    }
  }
}

/** Reads the rest of a response that openRequest left unread. */
function readAll (res: IncomingMessage): Promise<{ body: Buffer, complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let ended = false
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('end', () => { ended = true })
    res.on('error', () => {})
    res.on('close', () => resolve({ body: Buffer.concat(chunks), complete: ended && res.complete }))
  })
}

/** The next chunk of a response that openRequest left unread. */
function nextChunk (res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => res.once('data', (chunk: Buffer) => {
    res.pause()
    resolve(chunk.toString())
  }))
}

function warnings (logs: LogLine[]): LogLine[] {
  return logsAt(logs, LEVEL.warn)
}

t.test('finish(string) sends text/plain with the UTF-8 byte length', async (t) => {
  const text = 'héllo wörld ✓ 🚀'
  const { url } = await startRoute(t, OPTIONS, (request, reply) => { reply.finish(text) })
  const res = await request(url)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], TEXT)
  t.equal(res.headers['content-length'], String(Buffer.byteLength(text)))
  t.not(Buffer.byteLength(text), text.length, 'the body has multi-byte characters')
  t.equal(res.headers['transfer-encoding'], undefined)
  t.equal(res.body, text)
  t.ok(res.complete)
})

t.test('finish(bytes) sends application/octet-stream for a Buffer and a Uint8Array', async (t) => {
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/buffer', handler (request, reply) { reply.finish(Buffer.from('buffer bytes')) } })
    app.asyncRoute({ method: 'GET', url: '/uint8', handler (request, reply) { reply.finish(new Uint8Array([0x68, 0x69, 0x21])) } })
  })
  const buffer = await request(`${url}/buffer`)
  t.equal(buffer.headers['content-type'], OCTET)
  t.equal(buffer.headers['content-length'], '12')
  t.equal(buffer.body, 'buffer bytes')
  t.ok(buffer.complete)
  const uint8 = await request(`${url}/uint8`)
  t.equal(uint8.headers['content-type'], OCTET)
  t.equal(uint8.headers['content-length'], '3')
  t.equal(uint8.body, 'hi!')
  t.ok(uint8.complete)
})

t.test('finish(object) and finish(array) send JSON with the UTF-8 byte length', async (t) => {
  const object = { name: 'Zoë', tags: ['ü', 1], nested: { ok: true } }
  const array = [1, 'two', { three: '✓' }]
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/object', handler (request, reply) { reply.finish(object) } })
    app.asyncRoute({ method: 'GET', url: '/array', handler (request, reply) { reply.finish(array) } })
  })
  for (const [path, value] of [['/object', object], ['/array', array]] as const) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 200, path)
    t.equal(res.headers['content-type'], JSON_TYPE, path)
    t.equal(res.headers['content-length'], String(Buffer.byteLength(JSON.stringify(value))), path)
    t.strictSame(JSON.parse(res.body), value, path)
    t.ok(res.complete, path)
  }
})

t.test('finish() sends an empty body with content-length 0; finish(null) sends JSON null', async (t) => {
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/nothing', handler (request, reply) { reply.status(204).finish() } })
    app.asyncRoute({ method: 'GET', url: '/undefined', handler (request, reply) { reply.finish(undefined) } })
    app.asyncRoute({ method: 'GET', url: '/null', handler (request, reply) { reply.finish(null) } })
  })
  const nothing = await request(`${url}/nothing`)
  t.equal(nothing.statusCode, 204)
  t.equal(nothing.body, '')
  t.ok(nothing.complete)
  const nullBody = await request(`${url}/null`)
  t.equal(nullBody.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(nullBody.headers['content-length'], '4')
  t.equal(nullBody.body, 'null')
  for (const path of ['/undefined']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 200, path)
    t.equal(res.headers['content-length'], '0', path)
    t.equal(res.headers['content-type'], undefined, `${path}: no content type for no body`)
    t.equal(res.headers['transfer-encoding'], undefined, path)
    t.equal(res.body, '', path)
    t.ok(res.complete, path)
  }
})

t.test('a content-type set by the handler wins over the one finish() would choose', async (t) => {
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/html', {
      handler (request, reply) { reply.header('Content-Type', 'text/html; charset=utf-8').finish('<p>hi</p>') }
    })
    asyncGet(app, '/json-api', {
      handler (request, reply) { reply.headers({ 'content-type': 'application/vnd.api+json' }).finish({ data: [] }) }
    })
    asyncGet(app, '/bytes', {
      handler (request, reply) { reply.header('content-type', 'image/png').finish(Buffer.from([1, 2, 3, 4])) }
    })
  })
  const html = await request(`${url}/html`)
  t.equal(html.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(html.body, '<p>hi</p>')
  const api = await request(`${url}/json-api`)
  t.equal(api.headers['content-type'], 'application/vnd.api+json')
  t.strictSame(JSON.parse(api.body), { data: [] })
  const bytes = await request(`${url}/bytes`)
  t.equal(bytes.headers['content-type'], 'image/png')
  t.equal(bytes.headers['content-length'], '4')
})

t.test('status(), code(), header() and headers() set the head and chain', async (t) => {
  const chained: boolean[] = []
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/', {
      handler (request, reply) {
        chained.push(reply.status(201) === reply)
        chained.push(reply.header('X-One', '1') === reply)
        chained.push(reply.headers({ 'x-two': '2', 'x-many': ['a', 'b'], 'x-number': 42 }) === reply)
        chained.push(reply.code(202) === reply)
        reply.header('x-one', 'replaced').finish('chained')
      }
    })
    asyncGet(app, '/code', {
      handler (request, reply) { reply.code(418).header('set-cookie', ['a=1', 'b=2']).finish({ teapot: true }) }
    })
  })
  const res = await request(url)
  t.strictSame(chained, [true, true, true, true], 'every setter returns the reply')
  t.equal(res.statusCode, 202, 'the last status set wins')
  t.equal(res.headers['x-one'], 'replaced', 'header names are case-insensitive; the last value wins')
  t.equal(res.headers['x-two'], '2')
  t.equal(res.headers['x-many'], 'a, b')
  t.equal(res.headers['x-number'], '42')
  t.equal(res.body, 'chained')
  const code = await request(`${url}/code`)
  t.equal(code.statusCode, 418)
  t.strictSame(code.headers['set-cookie'], ['a=1', 'b=2'])
  t.strictSame(JSON.parse(code.body), { teapot: true })
})

t.test('an invalid status or header throws from the setter and leaves the reply usable', async (t) => {
  const outcomes: Record<string, string> = {}
  const attempt = (name: string, fn: () => unknown): void => {
    try {
      fn()
      outcomes[name] = 'no throw'
    } catch (error) {
      outcomes[name] = `${(error as Error).name}:${String((error as { code?: unknown }).code ?? '')}`
    }
  }
  const { url } = await startRoute(t, OPTIONS, (request, reply) => {
    attempt('status 99', () => reply.status(99))
    attempt('status 600', () => reply.status(600))
    attempt('status 200.5', () => reply.status(200.5))
    attempt('status string', () => reply.status('200' as unknown as number))
    attempt('code NaN', () => reply.code(Number.NaN))
    attempt('header name with space', () => reply.header('bad name', 'x'))
    attempt('header value with newline', () => reply.header('x-ok', 'a\r\nset-cookie: evil=1'))
    attempt('header value undefined', () => reply.header('x-ok', undefined as unknown as string))
    attempt('headers() with a bad name', () => reply.headers({ 'x-fine': '1', 'bad:name': '2' }))
    reply.status(203).finish(outcomes)
  })
  const res = await request(url)
  t.equal(res.statusCode, 203, 'the invalid codes were not kept')
  t.equal(res.headers['set-cookie'], undefined, 'no header was injected')
  t.equal(res.headers['bad name'], undefined)
  const got = JSON.parse(res.body) as Record<string, string>
  for (const name of ['status 99', 'status 600', 'status 200.5', 'status string', 'code NaN']) {
    t.match(got[name], /^TypeError:/, `${name} throws a TypeError`)
  }
  t.equal(got['header name with space'], 'TypeError:ERR_INVALID_HTTP_TOKEN')
  t.equal(got['header value with newline'], 'TypeError:ERR_INVALID_CHAR')
  t.match(got['header value undefined'], /^TypeError:ERR_HTTP_INVALID_HEADER_VALUE/)
  t.equal(got['headers() with a bad name'], 'TypeError:ERR_INVALID_HTTP_TOKEN')
})

t.test('an invalid header thrown out of the handler becomes a 500 answer', async (t) => {
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    app.asyncRoute({ method: 'GET', url: '/header', handler (request, reply) { reply.header('bad header', 'x').finish('never') } })
    app.asyncRoute({ method: 'GET', url: '/status', handler (request, reply) { reply.status(42).finish('never') } })
  })
  const header = await request(`${url}/header`)
  t.equal(header.statusCode, 500)
  t.equal(header.headers['content-type'], JSON_TYPE)
  const body = JSON.parse(header.body) as Record<string, unknown>
  t.equal(body.statusCode, 500)
  t.equal(body.code, 'ERR_INVALID_HTTP_TOKEN')
  t.equal(body.error, 'Internal Server Error')
  t.equal(body.stack, undefined)
  t.ok(header.complete)
  const status = await request(`${url}/status`)
  t.equal(status.statusCode, 500)
  t.match(JSON.parse(status.body), { statusCode: 500, error: 'Internal Server Error', message: /status code/ })
  t.equal(logsAt(logs, LEVEL.error).length, 2, 'both failures logged at error level')
})

t.test('header(), headers() and status() after the head was sent are ignored with a warning', async (t) => {
  const replies = replyQueue()
  const { url, logs } = await startRoute(t, OPTIONS, (request, reply) => {
    reply.write('a')
    const same = reply.header('x-late', '1') === reply && reply.status(418) === reply &&
      reply.headers({ 'x-later': '2' }) === reply
    reply.finish(same ? 'b' : 'not chainable')
    replies.push(reply)
  })
  const res = await request(url)
  await replies.next()
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-late'], undefined)
  t.equal(res.headers['x-later'], undefined)
  t.equal(res.body, 'ab')
  t.ok(res.complete)
  t.equal(logsAt(logs, LEVEL.warn, 'reply.header() ignored').length, 2, 'one warning per ignored header')
  t.equal(logsAt(logs, LEVEL.warn, 'reply.status() ignored').length, 1)
  t.equal(warnings(logs).length, 3)
})

t.test('write() sends a chunked head on first use, typed by the first chunk, and finish() completes it', async (t) => {
  const replies = replyQueue()
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/held', {
      handler (request, reply) {
        reply.write('first;')
        replies.push(reply)
      }
    })
    asyncGet(app, '/text', {
      handler (request, reply) {
        reply.status(201)
        reply.write('a')
        reply.write(Buffer.from('b'))
        reply.write(new Uint8Array([0xc3, 0xa7]))
        reply.write('✓')
        reply.finish('end')
      }
    })
    asyncGet(app, '/bytes', {
      handler (request, reply) {
        reply.write(new Uint8Array([0x78]))
        reply.write('y')
        reply.finish()
      }
    })
    asyncGet(app, '/typed', {
      handler (request, reply) {
        reply.header('content-type', 'text/event-stream')
        reply.write('data: 1\n\n')
        reply.finish(Buffer.from('data: 2\n\n'))
      }
    })
  })

  // The head and the first chunk arrive while the reply is still open.
  const { res } = await openRequest(`${url}/held`)
  const reply = await replies.next()
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], TEXT)
  t.equal(res.headers['transfer-encoding'], 'chunked')
  t.equal(res.headers['content-length'], undefined)
  t.equal(reply.finished, false, 'the head arrived before the reply was finished')
  t.equal(await nextChunk(res), 'first;')
  reply.write('second;')
  reply.finish('third')
  const rest = readAll(res)
  res.resume()
  const { body, complete } = await rest
  t.equal(body.toString(), 'second;third')
  t.ok(complete)

  const text = await request(`${url}/text`)
  t.equal(text.statusCode, 201)
  t.equal(text.headers['content-type'], TEXT)
  t.equal(text.headers['transfer-encoding'], 'chunked')
  t.equal(text.body, 'abç✓end')
  t.ok(text.complete)

  const bytes = await request(`${url}/bytes`)
  t.equal(bytes.headers['content-type'], OCTET, 'typed by the first chunk, bytes')
  t.equal(bytes.body, 'xy')
  t.ok(bytes.complete)

  const typed = await request(`${url}/typed`)
  t.equal(typed.headers['content-type'], 'text/event-stream')
  t.equal(typed.body, 'data: 1\n\ndata: 2\n\n')
  t.ok(typed.complete)
})

t.test('write() with something that is neither a string nor bytes throws a TypeError', async (t) => {
  const thrown: string[] = []
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/', {
      handler (request, reply) {
        for (const value of [42, { a: 1 }, null, undefined, [1, 2]]) {
          try {
            reply.write(value as unknown as string)
            thrown.push('no throw')
          } catch (error) {
            thrown.push(`${(error as Error).name}: ${(error as Error).message} (${String((error as { code?: string }).code)})`)
          }
        }
        reply.finish(`headersSent=${String(reply.headersSent)}`)
      }
    })
    app.asyncRoute({ method: 'GET', url: '/uncaught', handler (request, reply) { reply.write(42 as unknown as string) } })
  })
  const res = await request(url)
  t.equal(thrown.length, 5)
  for (const line of thrown) t.match(line, /^TypeError: reply\.write\(\) takes a string or bytes \(FST_ASYNC_ROUTE_INVALID_ARGUMENT\)/)
  t.equal(res.body, 'headersSent=false', 'a rejected chunk sends nothing')
  t.equal(res.headers['content-length'], '17')
  const uncaught = await request(`${url}/uncaught`)
  t.equal(uncaught.statusCode, 500)
  t.match(JSON.parse(uncaught.body), { statusCode: 500, message: /takes a string or bytes/ })
})

t.test('write() returns false when the socket buffer is full, and flush() resolves after the drain', async (t) => {
  const BIG = 32 * 1024 * 1024 // more than the loopback socket buffers of both ends can hold
  const replies = replyQueue()
  const results: Record<string, boolean> = {}
  let flushed = false
  const { url } = await startRoute(t, OPTIONS, (request, reply) => {
    results.small = reply.write('start;')
    results.big = reply.write(Buffer.alloc(BIG, 0x61))
    void reply.flush().then(() => { flushed = true })
    replies.push(reply)
  })
  const { res } = await openRequest(url) // does not read the body
  const reply = await replies.next()
  t.equal(results.small, true, 'a small write fits')
  t.equal(results.big, false, 'a chunk larger than the buffer reports backpressure')
  await sleep(250)
  t.equal(flushed, false, 'flush() waits while the client does not read')
  const all = readAll(res)
  res.resume()
  await waitFor(() => flushed, 10_000, 'flush() to resolve after the drain')
  t.equal(reply.finished, false)
  reply.finish(';end')
  const { body, complete } = await all
  t.equal(body.length, 6 + BIG + 4)
  t.equal(body.subarray(-4).toString(), ';end')
  t.ok(complete)
})

t.test('a pending flush() resolves, never rejects, when the client leaves', async (t) => {
  const replies = replyQueue()
  let outcome = 'pending'
  const { url } = await startRoute(t, OPTIONS, (request, reply) => {
    reply.write(Buffer.alloc(32 * 1024 * 1024))
    reply.flush().then(() => { outcome = 'resolved' }, () => { outcome = 'rejected' })
    replies.push(reply)
  })
  const { req } = await openRequest(url)
  const reply = await replies.next()
  await sleep(100)
  t.equal(outcome, 'pending')
  req.destroy()
  await waitFor(() => outcome !== 'pending', 3000, 'flush() to settle')
  t.equal(outcome, 'resolved')
  t.equal(reply.finished, true, 'the reply ended when the client left')
})

t.test('flush() sends the head before any body while the reply stays open', async (t) => {
  const replies = replyQueue()
  let flushed = false
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/events', {
      handler (request, reply) {
        reply.status(202).header('content-type', 'text/event-stream').header('cache-control', 'no-cache')
        void reply.flush().then(() => { flushed = true })
        replies.push(reply)
      }
    })
    asyncGet(app, '/untyped', {
      handler (request, reply) {
        void reply.flush()
        replies.push(reply)
      }
    })
  })
  const { res } = await openRequest(`${url}/events`)
  const reply = await replies.next()
  t.equal(res.statusCode, 202)
  t.equal(res.headers['content-type'], 'text/event-stream')
  t.equal(res.headers['cache-control'], 'no-cache')
  t.equal(res.headers['transfer-encoding'], 'chunked', 'no length: the body is still to come')
  t.equal(reply.finished, false, 'the head arrived while the reply is open')
  t.equal(reply.headersSent, true)
  await waitFor(() => flushed, 2000, 'flush() to resolve')
  reply.write('data: 1\n\n')
  t.equal(await nextChunk(res), 'data: 1\n\n', 'a chunk written after flush() arrives on its own')
  reply.finish('data: 2\n\n')
  const rest = readAll(res)
  res.resume()
  const { body, complete } = await rest
  t.equal(body.toString(), 'data: 2\n\n')
  t.ok(complete)

  // With nothing set, flush() chooses no content type; the later chunks do not change the head.
  const untyped = openRequest(`${url}/untyped`)
  const second = await replies.next()
  const { res: res2 } = await untyped
  t.equal(res2.statusCode, 200)
  t.equal(res2.headers['content-type'], undefined)
  second.write('text after the head')
  second.finish()
  const all = readAll(res2)
  res2.resume()
  t.equal((await all).body.toString(), 'text after the head')
})

t.test('flush() on a reply that already ended resolves at once', async (t) => {
  const outcomes: string[] = []
  const race = (p: Promise<void>): Promise<string> => Promise.race([p.then(() => 'resolved'), sleep(500).then(() => 'still pending')])
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/finished', {
      async handler (request, reply) {
        reply.finish('done')
        outcomes.push(await race(reply.flush()))
      }
    })
    asyncGet(app, '/failed', {
      async handler (request, reply) {
        reply.fail(Object.assign(new Error('nope'), { statusCode: 409 }))
        outcomes.push(await race(reply.flush()))
      }
    })
  })
  const finished = await request(`${url}/finished`)
  t.equal(finished.body, 'done')
  t.equal(finished.headers['content-length'], '4')
  const failed = await request(`${url}/failed`)
  t.equal(failed.statusCode, 409)
  await waitFor(() => outcomes.length === 2)
  t.strictSame(outcomes, ['resolved', 'resolved'])
})

t.test('finish() with a body that cannot be serialised fails the reply with 500', async (t) => {
  const replies = replyQueue()
  const held: unknown[][] = []
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/circular', {
      handler (request, reply) {
        const circular: Record<string, unknown> = { name: 'loop' }
        circular.self = circular
        reply.header('x-kept', 'yes')
        reply.finish(circular)
        replies.push(reply)
      }
    })
    app.asyncRoute({ method: 'GET', url: '/bigint', handler (request, reply) { reply.finish({ n: 1n }) } })
    asyncGet(app, '/after-write', {
      handler (request, reply) {
        const circular: unknown[] = []
        circular.push(circular)
        reply.write('partial')
        replies.push(reply)
        held.push(circular)
      }
    })
  })
  const res = await request(`${url}/circular`)
  const reply = await replies.next()
  t.equal(res.statusCode, 500)
  t.equal(res.headers['content-type'], JSON_TYPE)
  const body = JSON.parse(res.body) as Record<string, unknown>
  t.strictSame(Object.keys(body).sort(), ['error', 'message', 'statusCode'])
  t.equal(body.statusCode, 500)
  t.equal(body.error, 'Internal Server Error')
  t.match(body.message, /circular/i)
  t.ok(res.complete)
  t.equal(reply.finished, true)
  t.equal(logsAt(logs, LEVEL.error).length, 1, 'logged at error level')

  const bigint = await request(`${url}/bigint`)
  t.equal(bigint.statusCode, 500)
  t.match(JSON.parse(bigint.body), { statusCode: 500, message: /BigInt/ })

  // Once the head and a chunk are out, the failure cuts the response.
  const { res: streamed } = await openRequest(`${url}/after-write`)
  const streaming = await replies.next()
  t.equal(streamed.statusCode, 200)
  t.equal(await nextChunk(streamed), 'partial')
  const rest = readAll(streamed)
  streamed.resume()
  streaming.finish(held[0])
  const { body: restBody, complete } = await rest
  t.equal(restBody.length, 0)
  t.equal(complete, false, 'the client sees a truncated response, not a clean end')
  t.equal(streaming.finished, true)
})

t.test('finished, headersSent, request and raw tell the state of the reply', async (t) => {
  const seen: Record<string, unknown> = {}
  const replies = replyQueue()
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/state', {
      handler (request, reply) {
        seen.sameRequest = reply.request === request
        seen.rawIsResponse = reply.raw instanceof ServerResponse
        seen.rawOfRequest = reply.raw.req === request.raw
        seen.start = [reply.finished, reply.headersSent]
        reply.write('x')
        seen.afterWrite = [reply.finished, reply.headersSent]
        reply.finish('y')
        seen.afterFinish = [reply.finished, reply.headersSent]
        replies.push(reply)
      }
    })
    asyncGet(app, '/failed', {
      handler (request, reply) {
        reply.fail(new Error('x'))
        seen.afterFail = [reply.finished, reply.headersSent]
      }
    })
  })
  const res = await request(`${url}/state`)
  t.equal(res.body, 'xy')
  const reply = await replies.next()
  t.equal(seen.sameRequest, true, 'request is the Fastify request')
  t.equal(seen.rawIsResponse, true, 'raw is the Node response')
  t.equal(seen.rawOfRequest, true)
  t.strictSame(seen.start, [false, false])
  t.strictSame(seen.afterWrite, [false, true])
  t.strictSame(seen.afterFinish, [true, true])
  t.equal(reply.request.url, '/state')
  t.throws(() => { (reply as unknown as { finished: boolean }).finished = false }, TypeError, 'finished is read-only')
  await request(`${url}/failed`)
  t.strictSame(seen.afterFail, [true, true], 'a failed reply is finished too')
})

t.test('HEAD on a GET async route gets the head with content-length and no body', async (t) => {
  const methods: string[] = []
  const { url } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/text', {
      handler (request, reply) {
        methods.push(request.method)
        reply.header('x-handler', 'ran').finish('héllo')
      }
    })
    app.asyncRoute({ method: 'GET', url: '/json', handler (request, reply) { reply.finish({ a: 'ü' }) } })
    asyncGet(app, '/stream', {
      handler (request, reply) {
        reply.write('a')
        reply.finish('b')
      }
    })
  })
  const head = await request(`${url}/text`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-type'], TEXT)
  t.equal(head.headers['content-length'], String(Buffer.byteLength('héllo')))
  t.equal(head.headers['x-handler'], 'ran')
  t.equal(head.body, '')
  t.ok(head.complete)
  t.strictSame(methods, ['HEAD'], 'the handler ran for the HEAD request')

  const json = await request(`${url}/json`, { method: 'HEAD' })
  t.equal(json.headers['content-type'], JSON_TYPE)
  t.equal(json.headers['content-length'], String(Buffer.byteLength('{"a":"ü"}')))
  t.equal(json.body, '')

  const stream = await request(`${url}/stream`, { method: 'HEAD' })
  t.equal(stream.statusCode, 200)
  t.equal(stream.body, '')
  t.ok(stream.complete)
})

t.test('headers set by an onRequest hook are the base of every response; the handler can replace them', async (t) => {
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header('x-request-id', `rid-${request.id}`)
      reply.header('Access-Control-Allow-Origin', '*')
      done()
    })
    app.asyncRoute({ method: 'GET', url: '/finish', handler (request, reply) { reply.finish('ok') } })
    asyncGet(app, '/stream', {
      handler (request, reply) {
        reply.write('a')
        reply.finish('b')
      }
    })
    asyncGet(app, '/flush', {
      async handler (request, reply) {
        await reply.flush()
        reply.finish('flushed')
      }
    })
    app.asyncRoute({ method: 'GET', url: '/throw', handler () { throw new Error('boom') } })
    asyncGet(app, '/fail', {
      handler (request, reply) { reply.fail(Object.assign(new Error('missing'), { statusCode: 404 })) }
    })
    app.asyncRoute({ method: 'GET', url: '/timeout', timeout: 50, handler () {} })
    asyncGet(app, '/override', {
      handler (request, reply) { reply.header('access-control-allow-origin', 'https://example.com').finish('ok') }
    })
  })
  const expected: Record<string, number> = { '/finish': 200, '/stream': 200, '/flush': 200, '/throw': 500, '/fail': 404, '/timeout': 504 }
  const results = await Promise.all(Object.keys(expected).map(async (path) => [path, await request(`${url}${path}`)] as const))
  for (const [path, res] of results) {
    t.equal(res.statusCode, expected[path], `${path} status`)
    t.match(res.headers['x-request-id'], /^rid-/, `${path} carries the request id`)
    t.equal(res.headers['access-control-allow-origin'], '*', `${path} carries the CORS header`)
    t.ok(res.complete, `${path} complete`)
  }
  const override = await request(`${url}/override`)
  t.equal(override.headers['access-control-allow-origin'], 'https://example.com', 'the handler header replaces the hook one')
  t.match(override.headers['x-request-id'], /^rid-/, 'the other base headers stay')
})

t.test('a handler header replaces a hook header of any letter case', async (t) => {
  const { url } = await startApp(t, OPTIONS, (app) => {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header('content-type', 'application/x-hook')
      reply.header('x-trace', 'hook')
      done()
    })
    app.asyncRoute({ method: 'GET', url: '/hook-type', handler (request, reply) { reply.finish({ a: 1 }) } })
    asyncGet(app, '/mixed-case', {
      handler (request, reply) { reply.header('X-Trace', 'handler').header('Content-Type', 'text/x-handler').finish('x') }
    })
  })
  const hookType = await request(`${url}/hook-type`)
  t.equal(hookType.headers['content-type'], 'application/x-hook', 'a content type set by a hook wins over the body kind')
  t.equal(hookType.headers['x-trace'], 'hook')
  const mixed = await request(`${url}/mixed-case`)
  t.equal(mixed.headers['x-trace'], 'handler')
  t.equal(mixed.headers['content-type'], 'text/x-handler')
})

t.test('finish() twice keeps the first response and logs exactly one warning', async (t) => {
  const replies = replyQueue()
  const { url, logs } = await startRoute(t, OPTIONS, (request, reply) => {
    reply.finish('first')
    reply.finish('second, much longer')
    replies.push(reply)
  })
  const res = await request(url)
  await replies.next()
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'first')
  t.equal(res.headers['content-length'], '5')
  t.ok(res.complete)
  const warned = warnings(logs)
  t.equal(warned.length, 1)
  t.match(warned[0]?.msg, /reply\.finish\(\) called after the reply was already ended/)
  t.equal(logsAt(logs, LEVEL.error).length, 0)
})

t.test('fail() after finish(), and finish() after fail(), are ignored with one warning', async (t) => {
  const { url, logs } = await startApp(t, OPTIONS, (app) => {
    asyncGet(app, '/finish-then-fail', {
      handler (request, reply) {
        reply.finish({ ok: true })
        reply.fail(new Error('too late'))
      }
    })
    asyncGet(app, '/fail-then-finish', {
      handler (request, reply) {
        reply.fail(Object.assign(new Error('conflict'), { statusCode: 409, code: 'E_CONFLICT' }))
        reply.finish('too late')
        reply.write('too late')
      }
    })
  })
  const first = await request(`${url}/finish-then-fail`)
  t.equal(first.statusCode, 200)
  t.strictSame(JSON.parse(first.body), { ok: true })
  t.ok(first.complete)
  t.equal(logsAt(logs, LEVEL.warn, 'reply.fail() called after').length, 1)
  t.equal(warnings(logs).length, 1)
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'the ignored error is not logged as an error')

  const second = await request(`${url}/fail-then-finish`)
  t.equal(second.statusCode, 409)
  t.strictSame(JSON.parse(second.body), { statusCode: 409, code: 'E_CONFLICT', error: 'Conflict', message: 'conflict' })
  t.equal(logsAt(logs, LEVEL.warn, 'reply.finish() called after').length, 1)
  t.equal(logsAt(logs, LEVEL.warn, 'reply.write() called after').length, 1)
  t.equal(warnings(logs).length, 3)
})

t.test('finish(), write() and fail() after the watchdog ended the reply log at debug level only', async (t) => {
  const replies = replyQueue()
  const { url, logs } = await startRoute(t, { timeout: 50, closeGrace: 100 }, (request, reply) => { replies.push(reply) })
  const res = await request(url)
  t.equal(res.statusCode, 504)
  const reply = await replies.next()
  t.equal(reply.finished, true)
  const before = warnings(logs).length
  t.equal(before, 1, 'the watchdog itself warned once')
  t.equal(reply.write('late'), false, 'write() on an ended reply reports nothing was written')
  reply.finish('late')
  reply.fail(new Error('late'))
  t.equal(warnings(logs).length, 1, 'no warning for calls after the watchdog')
  t.equal(logsAt(logs, LEVEL.debug, 'reply.write() called after the reply ended').length, 1)
  t.equal(logsAt(logs, LEVEL.debug, 'reply.finish() called after the reply ended').length, 1)
  t.equal(logsAt(logs, LEVEL.debug, 'reply.fail() called after the reply ended').length, 1)
  t.equal(logsAt(logs, LEVEL.error).length, 0, 'nothing at error level: the 504 was the watchdog\'s warning')
})

// Fastify's reply habits: type(), getHeader(), hasHeader(), removeHeader(), redirect().
function habitRoutes (app: FastifyInstance, seen: Array<Record<string, unknown>>): void {
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-hook', 'from hook')
    reply.header('X-Remove-Me', 'hook')
    done()
  })
  asyncGet(app, '/head', {
    handler (request, reply) {
      const before = reply.getHeader('x-remove-me')
      const chained = reply.removeHeader('x-remove-me') === reply && reply.type('text/html; charset=utf-8') === reply
      reply.header('X-Handler', 'h')
      seen.push({
        before,
        chained,
        type: reply.getHeader('Content-Type'),
        hook: reply.getHeader('X-HOOK'),
        handler: reply.getHeader('x-handler'),
        removed: reply.hasHeader('x-remove-me'),
        hasHook: reply.hasHeader('x-hook'),
        missing: reply.getHeader('x-missing')
      })
      reply.finish('<p>hi</p>')
      seen.push({ length: reply.getHeader('content-length') })
    }
  })
  asyncGet(app, '/late', {
    handler (request, reply) {
      reply.write('a')
      const chained = reply.type('text/html') === reply && reply.removeHeader('x-hook') === reply
      seen.push({ chained, type: reply.getHeader('content-type'), hook: reply.getHeader('x-hook') })
      reply.finish('b')
    }
  })
  app.asyncRoute({ method: 'GET', url: '/redirect', handler (request, reply) { reply.redirect('/elsewhere') } })
  app.asyncRoute({ method: 'GET', url: '/moved', async handler (request, reply) { return reply.redirect('https://example.com/new', 301) } })
}

async function checkHabits (t: Test, get: (path: string) => Promise<{ statusCode: number, headers: Record<string, unknown>, body: string }>, seen: Array<Record<string, unknown>>, logs: LogLine[]): Promise<void> {
  const head = await get('/head')
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-type'], 'text/html; charset=utf-8', 'type() sets the content type')
  t.equal(head.headers['x-hook'], 'from hook')
  t.equal(head.headers['x-remove-me'], undefined, 'removeHeader() removes a hook header')
  t.equal(head.body, '<p>hi</p>')
  t.strictSame(seen.shift(), { before: 'hook', chained: true, type: 'text/html; charset=utf-8', hook: 'from hook', handler: 'h', removed: false, hasHook: true, missing: undefined })
  t.strictSame(seen.shift(), { length: '9' }, 'getHeader() after finish() reads the length as sent: a string, as on a Fastify reply')

  const late = await get('/late')
  t.equal(late.headers['content-type'], TEXT, 'type() after the head is ignored')
  t.equal(late.headers['x-hook'], 'from hook')
  t.equal(late.body, 'ab')
  t.strictSame(seen.shift(), { chained: true, type: TEXT, hook: 'from hook' }, 'getHeader() then reads the head as sent')
  t.equal(logsAt(logs, LEVEL.warn, 'reply.type() ignored').length, 1, 'one warning for type()')
  t.equal(logsAt(logs, LEVEL.warn, 'reply.removeHeader() ignored').length, 1, 'one warning for removeHeader()')

  const redirect = await get('/redirect')
  t.equal(redirect.statusCode, 302)
  t.equal(redirect.headers.location, '/elsewhere')
  t.equal(redirect.headers['content-length'], '0')
  t.equal(redirect.body, '')
  const moved = await get('/moved')
  t.equal(moved.statusCode, 301)
  t.equal(moved.headers.location, 'https://example.com/new')
  t.equal(moved.body, '')
  t.equal(warnings(logs).length, 2, 'no other warning')
}

t.test('type(), getHeader(), hasHeader(), removeHeader() and redirect() as on a Fastify reply, over a real socket', async (t) => {
  const seen: Array<Record<string, unknown>> = []
  const { url, logs } = await startApp(t, OPTIONS, (app) => habitRoutes(app, seen))
  await checkHabits(t, async (path) => await request(`${url}${path}`), seen, logs)
})

t.test('type(), getHeader(), hasHeader(), removeHeader() and redirect() through app.inject()', async (t) => {
  const seen: Array<Record<string, unknown>> = []
  const { app, logs } = await startApp(t, OPTIONS, (app) => habitRoutes(app, seen))
  await checkHabits(t, async (path) => {
    const res = await app.inject(path)
    return { statusCode: res.statusCode, headers: res.headers, body: res.body }
  }, seen, logs)
})

t.test('redirect() on an ended reply is ignored like finish(); a bad status throws', async (t) => {
  const replies = replyQueue()
  const { url, logs } = await startRoute(t, OPTIONS, (request, reply) => {
    t.throws(() => reply.redirect('/x', 99), { code: 'FST_ASYNC_ROUTE_INVALID_ARGUMENT' })
    reply.finish('first')
    reply.redirect('/x')
    replies.push(reply)
  })
  const res = await request(url)
  await replies.next()
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'first')
  t.equal(logsAt(logs, LEVEL.warn, 'reply.redirect() called after the reply was already ended').length, 1)
})

t.test('the reply a handler gets shows the contract and nothing more: internals are symbol-keyed', async (t) => {
  const CONTRACT = [
    'status', 'code', 'header', 'headers', 'type', 'getHeader', 'hasHeader', 'removeHeader', 'redirect',
    'write', 'flush', 'finish', 'fail', 'fetch', 'pipe', 'forward', 'setTimeout', 'onClose', 'onEnd',
    'finished', 'headersSent', 'signal', 'request', 'raw'
  ]
  let seen: string[] = []
  const { url } = await startRoute(t, {}, (_request, reply) => {
    const names = new Set<string>()
    for (let object: object | null = reply; object !== null && object !== Object.prototype; object = Object.getPrototypeOf(object)) {
      for (const name of Object.getOwnPropertyNames(object)) if (name !== 'constructor') names.add(name)
    }
    seen = [...names]
    reply.finish('ok')
  })
  t.equal((await request(`${url}/`)).body, 'ok')
  t.same(seen.filter((name) => !CONTRACT.includes(name)), [], 'no member outside the contract')
  t.same(CONTRACT.filter((name) => !seen.includes(name)), [], 'every member of the contract')
})

t.test('many flush() calls waiting on one full buffer share one drain listener', async (t) => {
  let listeners = -1
  let settled = 0
  const { url } = await startRoute(t, { timeout: 3000 }, (_request, reply) => {
    reply.write(Buffer.alloc(32 * 1024 * 1024))
    const before = reply.raw.listenerCount('drain')
    const waits = Array.from({ length: 20 }, () => reply.flush().then(() => { settled++ }))
    listeners = reply.raw.listenerCount('drain') - before
    void Promise.all(waits).then(() => reply.finish())
  })
  const { res } = await openRequest(`${url}/`)
  await waitFor(() => listeners >= 0, 2000, 'the handler')
  t.equal(listeners, 1, 'one drain listener for twenty waiting flush() calls')
  t.equal(settled, 0, 'nothing resolved while the client does not read')
  res.resume()
  await new Promise((resolve) => res.on('end', resolve))
  t.equal(settled, 20, 'all resolved once drained')
})
