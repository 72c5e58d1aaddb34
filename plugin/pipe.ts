// `reply.pipe()`: an upstream answer relayed into the reply — status, headers, body, with
// backpressure. Of a URL (or a request object): the direct path (pipe-direct.ts) when undici's
// `dispatch` takes the options as they are, else `fetch` and then the relay of its response.
import { InvalidArgumentError, mustBe } from './errors.js'
import { fetchUpstream } from './fetch.js'
import { isDirect, pipeDirect } from './pipe-direct.js'
import type { ReplyPort } from './reply-port.js'
import { callPolicy, type ResolvedRetry } from './retry-policy.js'
import type { PipeOptions, RewriteHeaders, UpstreamRequest, UpstreamResponse } from './types.js'
import { discardBody, type ResponseBody } from './undici-adapter.js'
import { splitRequest } from './upstream-call.js'
import { kFailByPlugin, kOpen, kRelayChunk, kRelayEnd, kRelayHead, kRetry } from './symbols.js'

/** A body that `pipe()` relays: the reply it feeds and the resolution of `pipe()`'s promise. */
const kPiped = Symbol('fastify-async-route.piped')
type PipedBody = ResponseBody & { [kPiped]: { reply: ReplyPort, resolve: () => void } }

function isResponse (source: unknown): source is UpstreamResponse {
  return typeof (source as UpstreamResponse).statusCode === 'number' && typeof (source as UpstreamResponse).body === 'object'
}

/** `reply.pipe()`: status, headers and body of an upstream response, with backpressure. */
export function pipeUpstream (reply: ReplyPort, source: UpstreamResponse | string | URL | UpstreamRequest, options: PipeOptions | undefined): Promise<void> {
  // A bad `retry` or `rewriteHeaders` is a programming error: thrown now, not a failed pipe.
  if (typeof source === 'string' || source instanceof URL || source === null || typeof source !== 'object') {
    // (Anything that is not an object is refused as a URL would be: 500 BAD_UPSTREAM_REQUEST.)
    checkRewrite(options?.rewriteHeaders, 'reply.pipe()')
    return pipeRequest(reply, source as string | URL, options, callPolicy(reply[kRetry], options?.retry, 'reply.pipe()'))
  }
  if (isResponse(source)) return relayResponse(reply, source, checkRewrite(options?.rewriteHeaders, 'reply.pipe()'))
  const [url, requestOptions] = splitRequest(source)
  checkRewrite(requestOptions.rewriteHeaders, 'reply.pipe()')
  return pipeRequest(reply, url, requestOptions, callPolicy(reply[kRetry], requestOptions.retry, 'reply.pipe()'))
}

/** A `rewriteHeaders` option, checked: a function, or null when none was given. */
export function checkRewrite (rewrite: unknown, what: string): RewriteHeaders | null {
  if (rewrite === undefined) return null
  if (typeof rewrite !== 'function') mustBe(InvalidArgumentError, `${what}:`, 'rewriteHeaders', 'a function (headers, request)', rewrite)
  return rewrite as RewriteHeaders
}

/**
 * `pipe(url)` and `forward`: the direct path when undici's `dispatch` takes the options as they
 * are. (`options.rewriteHeaders` was checked by the caller.)
 */
export function pipeRequest (reply: ReplyPort, url: string | URL, options: PipeOptions | undefined, policy: ResolvedRetry): Promise<void> {
  return isDirect(options) ? pipeDirect(reply, url, options, policy) : pipeFetched(reply, url, options as PipeOptions, policy)
}

/** `pipe(url)` with options only `request()` understands: `fetch`, then the relay of its response. */
async function pipeFetched (reply: ReplyPort, url: string | URL, options: PipeOptions, policy: ResolvedRetry): Promise<void> {
  const { rewriteHeaders, ...fetchOptions } = options
  let response: UpstreamResponse
  try {
    response = await fetchUpstream(reply, url, fetchOptions, policy)
  } catch (error) {
    reply[kFailByPlugin](error)
    return
  }
  return await relayResponse(reply, response, rewriteHeaders ?? null)
}

/** `pipe(res)`: the reply relays a response's head and body; resolves once the body closed. */
function relayResponse (reply: ReplyPort, response: UpstreamResponse, rewrite: RewriteHeaders | null): Promise<void> {
  const body = response.body
  if (!reply[kOpen]) {
    body.destroy()
    return Promise.resolve()
  }
  if (body.destroyed || body.readableEnded) {
    // Nothing more will come from this body (its upstream failed before pipe() was called, or
    // it was already read): none of the events below would fire, and the reply would hang.
    reply[kFailByPlugin](body.errored ?? new Error('reply.pipe(): the upstream response body was already read or destroyed'))
    return Promise.resolve()
  }
  if (!reply[kRelayHead](response.statusCode, response.headers, rewrite)) {
    // A HEAD answered, or a head refused (502): the rest is read for the pool.
    discardBody(body)
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    // What `body.pipe(raw)` would do, with one shared listener per event instead of a pipe's
    // closures and listeners on both streams. ('end', 'error' and 'close' come at most once:
    // `on` spares `once`'s wrappers.)
    const piped = body as PipedBody
    piped[kPiped] = { reply, resolve }
    piped.on('data', onPipedData)
    piped.on('end', onPipedEnd)
    // An upstream error mid-body cuts the client connection: a clean end would pass a
    // truncated body off as complete.
    piped.on('error', onPipedError)
    piped.on('close', onPipedClose)
  })
}

function onPipedData (this: PipedBody, chunk: Buffer): void {
  // Backpressure: paused until the client's socket drained (the reply resumes the body).
  if (!this[kPiped].reply[kRelayChunk](chunk, this)) this.pause()
}

function onPipedEnd (this: PipedBody): void {
  this[kPiped].reply[kRelayEnd]()
}

function onPipedError (this: PipedBody, error: Error): void {
  this[kPiped].reply[kFailByPlugin](error)
}

function onPipedClose (this: PipedBody): void {
  this[kPiped].resolve()
}
