// Where an upstream request goes: the origin and the request target (path and query) that
// undici's `dispatch` wants. A WHATWG URL parse costs more per request than everything else
// the plugin does for a `pipe(url)`, and a route calls the same few origins again and again:
// a string URL whose path needs no normalising is split instead, and the origin part is
// parsed once and remembered. Anything else (a URL object aside) goes through `new URL()`,
// so the answer is always the one `new URL()` gives.

export interface Target {
  /** `http://host:port`, normalised as `URL#origin` does. */
  readonly origin: string
  /** Path and query, as `URL#pathname + URL#search`. */
  readonly path: string
}

/**
 * A path and query that `new URL()` would leave as they are: characters it never escapes or
 * rewrites (no space, quote, `#`, `\`, non-ASCII, …), and no dot segment (`/./`, `/../`, or
 * their `%2e` spellings) that it would resolve.
 */
const VERBATIM_PATH = /^\/[\w\-.~!$&()*+,;=:@/?%]*$/
const DOT_SEGMENT = /\/\.\.?(?:[/?]|$)|%2e/i
/** In the part before the path: a query or fragment with no path, credentials, a backslash. */
const UNUSUAL_PREFIX = /[?#@\\]/

/** Origins seen in string URLs: `http://Host:80` → `http://host`. Bounded: cleared when full. */
const origins = new Map<string, string>()
const MAX_ORIGINS = 256

/** The origin of `scheme://host:port`, or null when that alone does not parse. */
function originOf (prefix: string): string | null {
  let origin = origins.get(prefix)
  if (origin === undefined) {
    try {
      origin = new URL(prefix).origin
    } catch {
      return null
    }
    if (origins.size >= MAX_ORIGINS) origins.clear()
    origins.set(prefix, origin)
  }
  return origin
}

function fromUrl (url: URL): Target {
  return { origin: url.origin, path: url.search === '' ? url.pathname : url.pathname + url.search }
}

/** The target of `url`; throws `new URL()`'s TypeError for a string that is not a URL. */
export function upstreamTarget (url: string | URL): Target {
  if (typeof url !== 'string') return fromUrl(url)
  const authority = url.indexOf('//')
  const slash = authority < 0 ? -1 : url.indexOf('/', authority + 2)
  if (slash > authority + 2) {
    const prefix = url.slice(0, slash)
    const path = url.slice(slash)
    if (VERBATIM_PATH.test(path) && !DOT_SEGMENT.test(path) && !UNUSUAL_PREFIX.test(prefix)) {
      const origin = originOf(prefix)
      if (origin !== null) return { origin, path }
    }
  }
  return fromUrl(new URL(url))
}
