// What a hostile or careless client controls, over real sockets: a socket cut in the middle of
// a compressed stream (relayed or written), headers a rewriteHeaders lets through with CR/LF or
// an invalid name, an accept-encoding of thousands of tokens near Node's header limit and past
// it, and the chat example's post body (oversized, not JSON, the wrong shape, control
// characters, the longest message allowed).
import http, { type IncomingMessage } from 'node:http'
import zlib from 'node:zlib'
import type { FastifyHttpOptions } from 'fastify'
import t from 'tap'
import type { AsyncReply, RewriteHeaders } from '../plugin/index.js'
import { asyncGet, closeTimed, LEVEL, logsAt, startApp } from './helpers/app.js'
import { poll, startChat } from './helpers/chat.js'
import { rawExchange, request, waitFor, type RawAnswer } from './helpers/client.js'
import { H2C, h2get, h2session } from './helpers/h2.js'
import { socketClosed, upstreamFor } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

/** Settles as `promise` does, or rejects once `ms` have passed (a bounded wait for `what`). */
function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/** Writes `head` as it is on a new connection and reads until the server closes it (or `ms`). */
function sendHead (url: string, head: string, ms?: number): Promise<RawAnswer> {
  return rawExchange(url, (socket) => socket.write(head), ms)
}

/** The head of a raw answer: its lines, the status line first. */
function headLines (text: string): string[] {
  return text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n')
}

// ---- a client that cuts a compressed stream ----

/** Text that compresses, but not to nothing: a compressed stream of it keeps flowing. */
function textChunk (n: number): string {
  let text = ''
  for (let i = 0; text.length < 16 * 1024; i++) text += `line ${n}.${i} ${Math.random().toString(36)}\n`
  return text
}

/**
 * Watches the compressors that zlib creates on the server side (gzip, deflate, brotli: what a
 * compressed answer is written through), so a test can tell whether each one was destroyed.
 * Restored when the test ends.
 */
function watchCompressors (test: Test): Set<zlib.Gzip | zlib.Deflate | zlib.BrotliCompress> {
  const seen = new Set<zlib.Gzip | zlib.Deflate | zlib.BrotliCompress>()
  for (const Class of [zlib.Gzip, zlib.Deflate, zlib.BrotliCompress]) {
    const proto = Class.prototype as unknown as { _transform: (...args: unknown[]) => void }
    const own = Object.getOwnPropertyDescriptor(proto, '_transform')
    const original = proto._transform
    proto._transform = function (this: zlib.Gzip, ...args: unknown[]) {
      seen.add(this)
      return original.apply(this, args)
    }
    test.teardown(() => {
      if (own === undefined) delete (proto as { _transform?: unknown })._transform
      else Object.defineProperty(proto, '_transform', own)
    })
  }
  return seen
}

/**
 * Opens a GET, reads its body until `bytes` have arrived (then stops reading when `stall`), and
 * destroys the socket: the head and how much had arrived.
 */
function cutAfter (url: string, encoding: string, bytes: number, stall: boolean): Promise<{ res: IncomingMessage, received: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { 'accept-encoding': encoding }, agent: false }, (res) => {
      let received = 0
      res.on('error', () => {})
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received < bytes) return
        res.removeAllListeners('data')
        if (stall) {
          // Stops reading: the socket's buffers fill up, then the client leaves.
          res.pause()
          setTimeout(() => { req.destroy(); resolve({ res, received }) }, 150)
        } else {
          req.destroy()
          resolve({ res, received })
        }
      })
    })
    req.on('error', (error: NodeJS.ErrnoException) => { if (error.code !== 'ECONNRESET') reject(error) })
  })
}

t.test('a client that leaves in the middle of a compressed stream: aborted, upstream cancelled, compressor destroyed, close() prompt', async (t) => {
  const compressors = watchCompressors(t)
  const upstreamClosed: Array<Promise<void>> = []
  // An endless, slow upstream body: a chunk of text every 5 ms until its socket closes.
  const up = await upstreamFor(t, (req, res) => {
    upstreamClosed.push(socketClosed(req))
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    let n = 0
    const timer = setInterval(() => res.write(textChunk(n++)), 5)
    res.on('close', () => clearInterval(timer))
  })
  const outcomes: string[] = []
  let loopsEnded = 0
  const { app, url, logs } = await startApp(t, { compress: true, timeout: 10_000, closeGrace: 5000 }, (app) => {
    const track = (reply: AsyncReply): void => { reply.onEnd((outcome) => outcomes.push(outcome)) }
    asyncGet(app, '/pipe', (_request, reply) => {
      track(reply)
      return reply.pipe(up.url)
    })
    // A handler that relays an upstream body itself, with write() and flush() for backpressure.
    asyncGet(app, '/write', async (_request, reply) => {
      track(reply)
      reply.type('text/plain; charset=utf-8')
      try {
        const res = await reply.fetch(up.url)
        for await (const chunk of res.body) {
          if (!reply.write(chunk as Buffer)) await reply.flush()
          if (reply.finished) break
        }
      } catch {
        // The fetch's body is destroyed when the client leaves: the loop ends here.
      } finally {
        loopsEnded++
      }
    })
    // A handler that produces its own stream, flushing each piece (an event stream's way).
    asyncGet(app, '/flush', async (_request, reply) => {
      track(reply)
      reply.type('text/event-stream')
      let n = 0
      while (!reply.finished) {
        reply.write(`data: ${textChunk(n++)}\n\n`)
        await reply.flush()
      }
      loopsEnded++
    })
  })
  const cases: Array<[path: string, encoding: string, stall: boolean]> = []
  for (const path of ['/pipe', '/write', '/flush']) {
    for (const encoding of ['gzip', 'br', 'deflate']) {
      for (const stall of [false, true]) cases.push([path, encoding, stall])
    }
  }
  let aborted = 0
  for (const [path, encoding, stall] of cases) {
    const what = `${path} ${encoding}${stall ? ', client stalled first' : ''}`
    const { res, received } = await within(cutAfter(`${url}${path}`, encoding, 4096, stall), 3000, what)
    t.equal(res.headers['content-encoding'], encoding, `${what}: compressed`)
    t.ok(received >= 4096, `${what}: part of the body arrived`)
    aborted++
    await waitFor(() => app.asyncRoute.stats().aborted === aborted, 2000, `${what}: the reply to end as aborted`)
    await waitFor(() => outcomes.length === aborted, 2000, `${what}: onEnd`)
    t.equal(outcomes.at(-1), 'aborted', `${what}: onEnd('aborted')`)
  }
  // The upstream saw each of its requests cancelled (the /flush route has none).
  t.equal(upstreamClosed.length, 12, 'one upstream request per /pipe and /write case')
  await within(Promise.all(upstreamClosed), 3000, 'every upstream socket to close')
  t.pass('the upstream saw every request socket closed')
  // The handlers' loops ended: flush() resolved after the client left, and the cancelled
  // fetch ended its body.
  await waitFor(() => loopsEnded === 12, 2000, 'the handlers\' loops to end')
  t.ok(compressors.size >= cases.length, `a compressor per answer (${compressors.size})`)
  await waitFor(() => [...compressors].every((compressor) => compressor.destroyed), 2000, 'every compressor to be destroyed')
  t.pass('every compressor was destroyed')
  t.same(app.asyncRoute.stats(), { started: 18, finished: 0, timedOut: 0, aborted: 18, failed: 0, rejected: 0, pending: 0 })
  t.same(app.asyncRoute.pending(), [])
  t.same(logs.filter((line) => line.level >= LEVEL.warn).map((line) => line.msg), [], 'nothing above info logged')
  const took = await closeTimed(app)
  t.ok(took < 1500, `close() resolved in ${took} ms (closeGrace is 5000)`)
})

t.test('a client that leaves while the handler runs, its reply left open: seen once the handler returns, the reply aborted', async (t) => {
  let closes = 0
  const { url, app } = await startApp(t, { timeout: 5000 }, (app) => {
    asyncGet(app, '/', (_request, reply) => {
      reply.onClose(() => { closes++ })
      // The client goes while the handler still runs (the same process: nothing of the
      // socket's end can be seen before the handler returns).
      client.destroy()
    })
  })
  const client = http.request(`${url}/`)
  client.on('error', () => {})
  client.end()
  await waitFor(() => app.asyncRoute.stats().aborted === 1, 2000, 'the reply to be aborted')
  t.equal(closes, 1, 'onClose ran')
  t.same(app.asyncRoute.pending(), [])
})

// ---- rewriteHeaders that lets CR/LF or an invalid name through ----

/** The headers a rewriteHeaders could return from values an upstream or a client controls. */
const INJECTIONS: Record<string, Record<string, unknown>> = {
  'CR LF in a value': { 'x-note': 'ok\r\nset-cookie: session=stolen' },
  'LF alone in a value': { 'x-note': 'ok\nset-cookie: session=stolen' },
  'CR LF CR LF in a value (a smuggled body)': { 'x-note': 'ok\r\n\r\nHTTP/1.1 200 OK\r\nset-cookie: session=stolen' },
  'CR LF in one value of an array': { 'x-note': ['fine', 'ok\r\nset-cookie: session=stolen'] },
  'NUL in a value': { 'x-note': 'ok\u0000set-cookie' },
  'a character past latin1 in a value': { 'x-note': 'ok\u010aset-cookie: session=stolen' },
  'CR LF in a name': { 'x-note\r\nset-cookie': 'session=stolen' },
  'a space in a name': { 'set-cookie session': 'stolen' },
  'a colon in a name': { 'set-cookie:': 'session=stolen' },
  'an empty name': { '': 'session=stolen' }
}

/** A route path segment for a case's name. */
function slug (name: string): string {
  return Buffer.from(name).toString('hex')
}

t.test('rewriteHeaders returning CR/LF or an invalid header name: 500 REWRITE_HEADERS before anything is sent, no header injected, no crash', async (t) => {
  const up = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'yes' }).end('upstream body')
  })
  const ways: Record<string, (reply: AsyncReply, rewriteHeaders: RewriteHeaders) => Promise<void>> = {
    'pipe(url)': (reply, rewriteHeaders) => reply.pipe(up.url, { rewriteHeaders }),
    'pipe(res)': async (reply, rewriteHeaders) => reply.pipe(await reply.fetch(up.url), { rewriteHeaders }),
    forward: (reply, rewriteHeaders) => reply.forward(up.url, { rewriteHeaders })
  }
  const { app, url, logs } = await startApp(t, {}, (app) => {
    // A hook's header: the base of every answer, error answers included.
    app.addHook('onRequest', async (_request, reply) => { reply.header('x-request-id', 'r-1') })
    for (const [way, relay] of Object.entries(ways)) {
      for (const [name, injected] of Object.entries(INJECTIONS)) {
        asyncGet(app, `/${slug(way)}/${slug(name)}`, (_request, reply) => relay(reply, (headers) => ({ ...headers, ...injected }) as Record<string, string>))
      }
    }
    asyncGet(app, '/after', (_request, reply) => reply.finish('still serving'))
  })
  let cases = 0
  for (const way of Object.keys(ways)) {
    for (const name of Object.keys(INJECTIONS)) {
      const what = `${way}, ${name}`
      cases++
      const answer = await sendHead(url, `GET /${slug(way)}/${slug(name)} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
      t.ok(answer.closed, `${what}: the answer ended`)
      const lines = headLines(answer.text)
      t.match(lines[0], /^HTTP\/1\.1 500 /, what)
      t.notOk(lines.some((line) => /^set-cookie/i.test(line)), `${what}: no injected header`)
      t.notMatch(answer.text, /stolen/, `${what}: nothing of the rewritten head went out`)
      t.notMatch(answer.text, /x-upstream|upstream body/i, `${what}: nothing of the upstream's answer either`)
      t.ok(lines.includes('x-request-id: r-1'), `${what}: the hook's header is kept`)
      const body = JSON.parse(answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4)) as { code: string }
      t.same(body, { statusCode: 500, code: 'FST_ASYNC_ROUTE_REWRITE_HEADERS', error: 'Internal Server Error', message: 'The upstream response headers could not be rewritten' }, what)
    }
  }
  t.equal((await request(`${url}/after`)).body, 'still serving', 'the process serves on')
  t.match(app.asyncRoute.stats(), { failed: cases, pending: 0 })
  // Logged at error level with Node's reason: a header Node refuses to write.
  const errors = logsAt(logs, LEVEL.error)
  t.equal(errors.length, cases, 'one error line per answer')
  t.ok(errors.every((line) => /ERR_INVALID_CHAR|ERR_INVALID_HTTP_TOKEN/.test(JSON.stringify(line))), 'each names Node\'s reason')
})

t.test('the 500 sent after Node refused a rewritten head has its own reason phrase', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.end('upstream body') })
  const rewriteHeaders: RewriteHeaders = () => ({ 'x-note': 'ok\r\nset-cookie: session=stolen' })
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/pipe', (_request, reply) => reply.pipe(up.url, { rewriteHeaders }))
    asyncGet(app, '/forward', (_request, reply) => reply.forward(up.url, { rewriteHeaders }))
  })
  for (const path of ['/pipe', '/forward']) {
    const answer = await sendHead(url, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
    t.equal(headLines(answer.text)[0], 'HTTP/1.1 500 Internal Server Error', path)
  }
})

t.test('over HTTP/2, rewriteHeaders returning a bad name or a CR/LF value: 500 REWRITE_HEADERS on a clean head', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.writeHead(200, { 'x-upstream': 'yes' }).end('upstream body') })
  const badName: RewriteHeaders = (headers) => ({ ...headers, 'set-cookie session': 'stolen' })
  // Node's HTTP/2 response would not refuse this one itself (HTTP/2 frames each field apart,
  // and Node's client drops the field): the plugin checks what the callback returned.
  const crlfValue: RewriteHeaders = (headers) => ({ ...headers, 'x-note': 'ok\r\nset-cookie: session=stolen' })
  const { url } = await startApp(t, {}, (app) => {
    asyncGet(app, '/pipe', (_request, reply) => reply.pipe(up.url, { rewriteHeaders: badName }))
    asyncGet(app, '/forward', (_request, reply) => reply.forward(up.url, { rewriteHeaders: badName }))
    asyncGet(app, '/crlf', (_request, reply) => reply.pipe(up.url, { rewriteHeaders: crlfValue }))
  }, H2C)
  const session = h2session(t, url)
  for (const path of ['/pipe', '/forward', '/crlf']) {
    const answer = await h2get(session, path)
    t.equal(answer.status, 500, path)
    t.equal(JSON.parse(answer.body).code, 'FST_ASYNC_ROUTE_REWRITE_HEADERS', path)
    t.equal(answer.headers['x-upstream'], undefined, `${path}: nothing of the refused head`)
    t.equal(answer.headers['set-cookie'], undefined, `${path}: no header injected`)
    t.equal(answer.headers['content-type'], 'application/json; charset=utf-8', `${path}: the error answer's own head`)
  }
})

t.test('over HTTP/2, a head the protocol refuses that the upstream sent (two content-types) is the upstream\'s: 502, also through a rewriteHeaders that passes it on', async (t) => {
  const up = await upstreamFor(t, (req) => {
    req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi')
  })
  const passOn: RewriteHeaders = (headers) => ({ ...headers, 'x-gateway': '1' })
  const { url, logs } = await startApp(t, {}, (app) => {
    asyncGet(app, '/plain', (_request, reply) => reply.pipe(up.url))
    asyncGet(app, '/rewritten', (_request, reply) => reply.pipe(up.url, { rewriteHeaders: passOn }))
  }, H2C)
  const session = h2session(t, url)
  for (const path of ['/plain', '/rewritten']) {
    const answer = await h2get(session, path)
    t.equal(answer.status, 502, path)
    t.equal(JSON.parse(answer.body).code, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', path)
    t.equal(answer.headers['x-gateway'], undefined, `${path}: nothing of the refused head`)
  }
  t.match(JSON.stringify(logsAt(logs, LEVEL.error)), /ERR_HTTP2_HEADER_SINGLE_VALUE/, 'Node\'s reason is logged')
})

t.test('a relayed head Node refuses without rewriteHeaders (a hook\'s header): the connection is cut, logged, the process serves on', async (t) => {
  const up = await upstreamFor(t, (_req, res) => { res.end('upstream body') })
  const { url, logs } = await startApp(t, {}, (app) => {
    app.addHook('onRequest', async (request, reply) => {
      // Fastify does not check header values: Node refuses this one at writeHead(), and the
      // error answer carries it too.
      if (request.url !== '/after') reply.header('x-broken', 'line\nbreak')
    })
    asyncGet(app, '/pipe', (_request, reply) => reply.pipe(up.url))
    asyncGet(app, '/after', (_request, reply) => reply.finish('still serving'))
  })
  const answer = await sendHead(url, 'GET /pipe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
  t.ok(answer.closed, 'the answer ended')
  t.equal(answer.text, '', 'the connection was cut before any head')
  const errors = JSON.stringify(logsAt(logs, LEVEL.error))
  t.match(errors, /ERR_INVALID_CHAR/, 'Node\'s reason is logged')
  t.match(errors, /FST_ASYNC_ROUTE_UPSTREAM_ERROR/, 'as a failed relay, not as rewriteHeaders\' (there is none)')
  t.notMatch(errors, /FST_ASYNC_ROUTE_REWRITE_HEADERS/)
  t.equal((await request(`${url}/after`)).body, 'still serving')
})

// ---- a huge accept-encoding ----

/** A compressible JSON body above the default threshold. */
const BODY = JSON.stringify({ items: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}` })) })

/**
 * Tokens of every kind a client can invent, none of them a coding of ours: unknown codings with
 * odd q-values, stray separators, uppercase, `*;q=0` (`#` is replaced by a counter).
 */
function junk (bytes: number): string {
  const tokens = ['x-custom-#;q=0.5', 'compress#;q=0.001', 'IDENTITY;Q=0.9', 'foo#;bar=baz;q=0.3', ';;;', ',,,', 'q=q=q#', 'a#;q=', '*;q=0', 'zstd#', 'x-\t-y#;q=1.0000', 'GZIP-#;Q=1']
  let text = ''
  for (let i = 0; text.length < bytes; i++) text += `${(tokens[i % tokens.length] as string).replace('#', String(i))}, `
  return text
}

/** GET with this accept-encoding: status, encoding, the decoded body and how long it took. */
function negotiated (url: string, acceptEncoding: string): Promise<{ status: number, encoding: string | undefined, vary: string | undefined, body: string, ms: number }> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    http.get(url, { headers: { 'accept-encoding': acceptEncoding }, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const raw = Buffer.concat(chunks)
        const encoding = res.headers['content-encoding']
        const body = encoding === 'gzip' ? zlib.gunzipSync(raw) : encoding === 'br' ? zlib.brotliDecompressSync(raw) : encoding === 'deflate' ? zlib.inflateSync(raw) : raw
        resolve({ status: res.statusCode ?? 0, encoding, vary: res.headers.vary, body: body.toString(), ms: performance.now() - started })
      })
    }).on('error', reject)
  })
}

t.test('a huge accept-encoding (thousands of tokens and q-values, near Node\'s 16 KiB) is negotiated promptly; past the limit, Node answers 431', async (t) => {
  const { app, url } = await startApp(t, { compress: true }, (app) => {
    asyncGet(app, '/', (_request, reply) => reply.finish(JSON.parse(BODY)))
  })
  const nearLimit = 15 * 1024
  const cases: Array<[string, string, string | undefined]> = [
    ['junk, then gzip', `${junk(nearLimit)}gzip;q=0.2`, 'gzip'],
    ['junk, then deflate and br at one q', `${junk(nearLimit)}deflate;q=0.4, br;q=0.4`, 'br'],
    ['uppercase codings and Q', `${junk(nearLimit)}GZIP;Q=0.9, BR;Q=0.1`, 'gzip'],
    ['junk alone: identity', junk(nearLimit), undefined],
    ['*;q=0 after junk: identity', `${junk(nearLimit)}*;q=0`, undefined],
    ['every coding refused', `${junk(nearLimit)}br;q=0, gzip;q=0, deflate;q=0`, undefined],
    ['a wildcard after junk', `${junk(nearLimit)}*`, 'br'],
    ['one coding repeated thousands of times', 'gzip;q=0.5, '.repeat(1200) + 'deflate;q=0.6', 'deflate'],
    ['separators only', ', ; = '.repeat(2500), undefined],
    ['one token of 15 KiB', 'g'.repeat(nearLimit), undefined],
    ['q-values of 1,000 digits', `gzip;q=0.${'9'.repeat(1000)}, br;q=0.${'1'.repeat(1000)}`, 'gzip']
  ]
  for (const [name, acceptEncoding, expected] of cases) {
    const res = await negotiated(`${url}/`, acceptEncoding)
    t.equal(res.status, 200, name)
    t.equal(res.encoding, expected, `${name}: ${expected ?? 'identity'}`)
    t.equal(res.body, BODY, `${name}: the body decodes whole`)
    t.equal(res.vary, 'accept-encoding', name)
    t.ok(res.ms < 1000, `${name}: answered in ${res.ms.toFixed(0)} ms`)
  }
  // Past Node's limit (16 KiB of head by default): Fastify's client error handler answers 431
  // and closes the connection; no route runs.
  const over = await sendHead(url, `GET / HTTP/1.1\r\nhost: x\r\naccept-encoding: ${junk(20 * 1024)}gzip\r\n\r\n`)
  t.equal(headLines(over.text)[0], 'HTTP/1.1 431 Request Header Fields Too Large', 'past 16 KiB: 431')
  t.ok(over.closed, 'the connection is closed')
  t.equal(app.asyncRoute.stats().started, cases.length, 'the handler never ran for it')
  t.equal((await negotiated(`${url}/`, 'gzip')).encoding, 'gzip', 'the server serves on')
})

t.test('with maxHeaderSize raised, a 60 KiB accept-encoding is still negotiated promptly', async (t) => {
  const options: FastifyHttpOptions<http.Server> = { http: { maxHeaderSize: 128 * 1024 } }
  const { url } = await startApp(t, { compress: true }, (app) => {
    asyncGet(app, '/', (_request, reply) => reply.finish(JSON.parse(BODY)))
  }, options)
  for (const [acceptEncoding, expected] of [[`${junk(60 * 1024)}deflate;q=0.7`, 'deflate'], [junk(60 * 1024), undefined]] as const) {
    const res = await negotiated(`${url}/`, acceptEncoding)
    t.equal(res.status, 200)
    t.equal(res.encoding, expected)
    t.equal(res.body, BODY)
    t.ok(res.ms < 1000, `answered in ${res.ms.toFixed(0)} ms`)
  }
})

t.test('a coding refused with q=0 is not chosen through a wildcard', async (t) => {
  const { url } = await startApp(t, { compress: true }, (app) => {
    asyncGet(app, '/', (_request, reply) => reply.finish(JSON.parse(BODY)))
  })
  // RFC 9110 §12.5.3: "*" matches any coding not explicitly listed in the field.
  t.equal((await negotiated(`${url}/`, 'br;q=0, *')).encoding, 'gzip', 'br;q=0, *: not br')
  t.equal((await negotiated(`${url}/`, '*, br;q=0')).encoding, 'gzip', '*, br;q=0: not br')
  t.equal((await negotiated(`${url}/`, 'gzip;q=0, br;q=0, *')).encoding, 'deflate', 'both refused: the one left')
  t.equal((await negotiated(`${url}/`, 'deflate, *;q=0')).encoding, 'deflate', '*;q=0 refuses only the unnamed')
  t.equal((await negotiated(`${url}/`, 'br;q=0, gzip;q=0, deflate;q=0, *')).encoding, undefined, 'all refused by name: identity')
})

// ---- the chat example's post ----

/** POSTs `body` as it is to the chat with this content type. */
function postRaw (url: string, body: string, type: string | undefined = 'application/json'): ReturnType<typeof request> {
  return request(`${url}/a/message/new`, { method: 'POST', headers: type === undefined ? {} : { 'content-type': type }, body })
}

t.test('the chat\'s post: oversized, not JSON, the wrong shape are refused with 4xx and stored nothing; control characters and the longest message round-trip', async (t) => {
  const { room, url, logs } = await startChat(t)
  const refused: Array<[string, string, string | undefined, number, string]> = [
    ['a body past Fastify\'s 1 MiB bodyLimit', JSON.stringify({ body: 'x'.repeat(1024 * 1024 + 1) }), 'application/json', 413, 'FST_ERR_CTP_BODY_TOO_LARGE'],
    ['a message of 2,001 characters', JSON.stringify({ body: 'x'.repeat(2001) }), 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['not JSON', '{"body": "hi"', 'application/json', 400, 'FST_ERR_CTP_INVALID_JSON_BODY'],
    ['an empty JSON body', '', 'application/json', 400, 'FST_ERR_CTP_EMPTY_JSON_BODY'],
    ['a JSON array', '["hi"]', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['a JSON string', '"hi"', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['JSON null', 'null', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['no body field', '{"message": "hi"}', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['an empty message', '{"body": ""}', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['a null message', '{"body": null}', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['an object as the message', '{"body": {"toString": "x"}}', 'application/json', 400, 'FST_ERR_VALIDATION'],
    ['__proto__ in the body', '{"body": "hi", "__proto__": {"admin": true}}', 'application/json', 400, 'FST_ERR_CTP_INVALID_JSON_BODY'],
    ['constructor.prototype in the body', '{"body": "hi", "constructor": {"prototype": {"admin": true}}}', 'application/json', 400, 'FST_ERR_CTP_INVALID_JSON_BODY'],
    ['text/plain', 'hello', 'text/plain', 400, 'FST_ERR_VALIDATION'],
    ['an unknown content type', '<body>hi</body>', 'application/xml', 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE'],
    // (Fastify reads a body that comes with no content type as JSON.)
    ['no content type, not JSON', 'hello', undefined, 400, 'FST_ERR_CTP_INVALID_JSON_BODY']
  ]
  for (const [name, body, type, status, code] of refused) {
    const res = await postRaw(url, body, type)
    t.equal(res.statusCode, status, name)
    t.equal((JSON.parse(res.body) as { code?: string }).code, code, name)
  }
  t.equal(room.cache.length, 0, 'nothing was stored')
  t.equal(({} as Record<string, unknown>).admin, undefined, 'no prototype polluted')

  const accepted: Array<[string, string, string]> = [
    // What Fastify's schema coercion (`coerceTypes: 'array'`) makes of scalars: their text.
    ['a number', '{"body": 42}', '42'],
    ['a boolean', '{"body": true}', 'true'],
    ['an array of one string', '{"body": ["one"]}', 'one'],
    // Fields beside the message are parsed and dropped, however long or deep.
    ['a field name of 500,000 characters', `{"body": "long field", "${'k'.repeat(500_000)}": 1}`, 'long field'],
    ['a field nested 100,000 deep', `{"body": "deep field", "x": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`, 'deep field']
  ]
  for (const [name, body, stored] of accepted) {
    const res = await postRaw(url, body)
    t.equal(res.statusCode, 200, name)
    t.equal((JSON.parse(res.body) as { body: string }).body, stored, `${name}: stored as ${JSON.stringify(stored)}`)
  }
  // Control characters, a lone surrogate, an extra field: stored as they are, escaped in JSON.
  const hostile = 'a\u0000b\u001b[31mred\r\nset-cookie: x\u2028\ud800'
  const sent = await postRaw(url, JSON.stringify({ body: hostile, extra: 'ignored' }))
  t.equal(sent.statusCode, 200, 'control characters')
  t.same(Object.keys(JSON.parse(sent.body) as object).sort(), ['at', 'body', 'id'], 'only the message is stored')
  t.notOk([...sent.body].some((char) => char.charCodeAt(0) < 0x20), 'no raw control character in the answer')
  // The longest message allowed: 2,000 characters, counted as code points (emoji are 2 UTF-16 units).
  const longest = '\u{1f600}'.repeat(2000)
  t.equal((await postRaw(url, JSON.stringify({ body: longest }))).statusCode, 200, '2,000 emoji')
  t.equal((await postRaw(url, JSON.stringify({ body: `${longest}x` }))).statusCode, 400, '2,001 characters')
  const { messages } = await poll(url, 0)
  t.same(messages.map((message) => message.body), ['42', 'true', 'one', 'long field', 'deep field', hostile, longest], 'a page gets them back intact')
  t.same(logsAt(logs, LEVEL.error), [], 'nothing logged at error level')
})
