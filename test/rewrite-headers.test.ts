// pipe(res | url, { rewriteHeaders }) and forward(url, { rewriteHeaders }): what the app returns
// is what is relayed, so its own CORS and security headers can win over the upstream's.
import { Readable } from 'node:stream'
import t from 'tap'
import type { AsyncReply, RewriteHeaders } from '../plugin/index.js'
import { asyncGet, LEVEL, logsAt, startApp } from './helpers/app.js'
import { request } from './helpers/client.js'
import { upstreamFor } from './helpers/upstream.js'

type Test = Parameters<Parameters<typeof t.test>[0]>[0]

/** An upstream that sends the headers a gateway must not let through. */
async function chattyUpstream (test: Test): Promise<string> {
  const up = await upstreamFor(test, (req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'access-control-allow-origin': '*',
      'content-security-policy': 'default-src *',
      server: 'upstream/1.0',
      'x-powered-by': 'PHP/5',
      location: 'http://api.internal:3000/next',
      'X-Kept': 'yes'
    }).end(`hello ${String(req.method)}`)
  })
  return up.url
}

/** Keeps the app's own CORS and CSP headers, drops the upstream's fingerprint, rewrites location. */
const keepOurs: RewriteHeaders = (headers, request) => {
  const { server, 'x-powered-by': poweredBy, 'access-control-allow-origin': acao, 'content-security-policy': csp, ...rest } = headers
  return { ...rest, location: String(headers.location).replace('http://api.internal:3000', `http://${String(request.headers.host)}`), 'x-dropped': null, 'x-also-dropped': undefined }
}

/** A route path segment for a case's name. */
function slug (name: string): string {
  return Buffer.from(name).toString('hex')
}

const ways: Record<string, (reply: AsyncReply, url: string, rewrite?: RewriteHeaders) => Promise<void>> = {
  'pipe(url)': (reply, url, rewriteHeaders) => reply.pipe(url, { rewriteHeaders }),
  'pipe({ url })': (reply, url, rewriteHeaders) => reply.pipe({ url, rewriteHeaders }),
  'pipe(url) with a streamed body': (reply, url, rewriteHeaders) => reply.pipe(url, { method: 'POST', body: Readable.from(['x']), rewriteHeaders }),
  'pipe(res)': async (reply, url, rewriteHeaders) => reply.pipe(await reply.fetch(url), { rewriteHeaders }),
  forward: (reply, url, rewriteHeaders) => reply.forward(url, { rewriteHeaders })
}

t.test('rewriteHeaders: the app keeps its CORS and security headers, drops server and x-powered-by, rewrites location', async (t) => {
  const upstream = await chattyUpstream(t)
  const { url } = await startApp(t, {}, (app) => {
    // What @fastify/cors and @fastify/helmet do: headers set before the handler runs.
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('access-control-allow-origin', 'https://app.example')
      reply.header('content-security-policy', "default-src 'self'")
    })
    for (const [name, relay] of Object.entries(ways)) {
      app.asyncRoute({ method: 'GET', url: `/${slug(name)}`, handler: (_request, reply) => relay(reply, upstream, keepOurs) })
      app.asyncRoute({ method: 'GET', url: `/default/${slug(name)}`, handler: (_request, reply) => relay(reply, upstream) })
    }
  })
  const host = new URL(url).host
  for (const name of Object.keys(ways)) {
    const res = await request(`${url}/${slug(name)}`)
    t.equal(res.statusCode, 200, name)
    t.match(res.body, /^hello /, name)
    t.equal(res.headers['access-control-allow-origin'], 'https://app.example', `${name}: the app's CORS header wins`)
    t.equal(res.headers['content-security-policy'], "default-src 'self'", `${name}: the app's CSP wins`)
    t.equal(res.headers.server, undefined, `${name}: server dropped`)
    t.equal(res.headers['x-powered-by'], undefined, `${name}: x-powered-by dropped`)
    t.equal(res.headers.location, `http://${host}/next`, `${name}: location rewritten`)
    t.equal(res.headers['x-kept'], 'yes', `${name}: the rest relayed (names in lower case)`)
    t.equal(res.headers['x-dropped'], undefined)
    // Without it, the upstream's headers replace the hooks' (the documented default).
    const plain = await request(`${url}/default/${slug(name)}`)
    t.equal(plain.headers['access-control-allow-origin'], '*', `${name}: by default the upstream's header replaces the hook's`)
    t.equal(plain.headers.server, 'upstream/1.0')
  }
})

t.test('rewriteHeaders that throws or returns no object fails the reply with 500 before anything is sent; a non-function is refused', async (t) => {
  const upstream = await chattyUpstream(t)
  const bad: Record<string, RewriteHeaders> = {
    throws: () => { throw new Error('rewrite failed') },
    'returns null': () => null as unknown as Record<string, string>,
    'returns a string': () => 'x' as unknown as Record<string, string>
  }
  const { url, logs } = await startApp(t, {}, (app) => {
    for (const [name, relay] of Object.entries(ways)) {
      for (const [kind, rewrite] of Object.entries(bad)) {
        app.asyncRoute({ method: 'GET', url: `/${slug(name)}/${slug(kind)}`, handler: (_request, reply) => relay(reply, upstream, rewrite) })
      }
      asyncGet(app, `/${slug(name)}/not-a-function`, {
        handler: async (_request, reply) => {
          try {
            await relay(reply, upstream, 'yes' as unknown as RewriteHeaders)
          } catch (error) {
            reply.finish({ code: (error as { code: string }).code, message: (error as Error).message })
          }
        }
      })
    }
  })
  for (const name of Object.keys(ways)) {
    for (const kind of Object.keys(bad)) {
      const res = await request(`${url}/${slug(name)}/${slug(kind)}`)
      t.equal(res.statusCode, 500, `${name}, ${kind}`)
      t.equal(JSON.parse(res.body).code, 'FST_ASYNC_ROUTE_REWRITE_HEADERS', `${name}, ${kind}`)
      t.equal(res.headers.server, undefined, 'nothing of the upstream head went out')
    }
    const refused = JSON.parse((await request(`${url}/${slug(name)}/not-a-function`)).body)
    t.equal(refused.code, 'FST_ASYNC_ROUTE_INVALID_ARGUMENT', `${name}: not a function`)
    t.match(refused.message, /rewriteHeaders/)
  }
  t.ok(logsAt(logs, LEVEL.error).some((line) => JSON.stringify(line).includes('rewrite failed')), 'what it threw is logged')
})
