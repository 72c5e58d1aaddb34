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
  /**
   * Set when the URL string was split as it is: then it holds no dot segment in the sense of
   * `hasDotSegment` either, and that check need not run again.
   */
  readonly verbatim?: true
}

/**
 * A path and query that `new URL()` would leave as they are: characters it never escapes or
 * rewrites (no space, quote, `#`, `\`, non-ASCII, …), and no dot segment (`/./`, `/../`, their
 * `%2e` spellings, nor one between `%2f` or `%5c`, which `hasDotSegment` reads as `/`).
 */
const VERBATIM_PATH = /^\/[\w\-.~!$&()*+,;=:@/?%]*$/
const DOT_SEGMENT = /(?:\/|%2f|%5c)\.\.?(?:[/?]|%2f|%5c|$)|%2e/i
const SCHEME = /^[a-zA-Z][a-zA-Z0-9+.-]*$/
/** In the part before the path: a query or fragment with no path, credentials, a backslash. */
const UNUSUAL_PREFIX = /[?#@\\]/

/** Origins seen in string URLs: `http://Host:80` → `http://host`. Bounded: cleared when full. */
const origins = new Map<string, string>()
const MAX_ORIGINS = 256

/** The origin of `scheme://host:port`, or null when that alone does not parse or is not http(s). */
function originOf (prefix: string): string | null {
  let origin = origins.get(prefix)
  if (origin === undefined) {
    let parsed: URL
    try {
      parsed = new URL(prefix)
    } catch {
      return null
    }
    if (!HTTP_SCHEMES.has(parsed.protocol)) return null
    origin = parsed.origin
    if (origins.size >= MAX_ORIGINS) origins.clear()
    origins.set(prefix, origin)
  }
  return origin
}

/** The only schemes an upstream request may use. */
const HTTP_SCHEMES: ReadonlySet<string> = new Set(['http:', 'https:'])

function fromUrl (url: URL): Target {
  if (!HTTP_SCHEMES.has(url.protocol)) throw new TypeError(`not an http: or https: URL (${url.protocol})`)
  return { origin: url.origin, path: url.search === '' ? url.pathname : url.pathname + url.search }
}

/**
 * The target of `url`; throws a TypeError for a string that is not a URL (`new URL()`'s) and
 * for a URL whose scheme is not `http:` or `https:`.
 */
export function splitUrl (url: string | URL): Target {
  if (typeof url !== 'string') return fromUrl(url)
  const authority = url.indexOf('//')
  const slash = authority < 0 ? -1 : url.indexOf('/', authority + 2)
  // `scheme://` exactly (`http:x//y` is another URL), and a path with no empty query at its
  // end (the parser drops a bare `?`).
  if (slash > authority + 2 && url.charCodeAt(authority - 1) === 58 /* : */ && SCHEME.test(url.slice(0, authority - 1))) {
    const prefix = url.slice(0, slash)
    const path = url.slice(slash)
    if (VERBATIM_PATH.test(path) && !DOT_SEGMENT.test(path) && !UNUSUAL_PREFIX.test(prefix) && !path.endsWith('?')) {
      const origin = originOf(prefix)
      if (origin !== null) return { origin, path, verbatim: true }
    }
  }
  return fromUrl(new URL(url))
}

// Path safety. The WHATWG parser first removes tab, LF and CR wherever they are, and C0
// controls and spaces at both ends, and only then resolves `.` and `..`: `.\t./` and a trailing
// `..\u0000` are dot segments to it. Raw `request.url` cannot carry these bytes (Node refuses
// them), but a decoded route parameter or query value can; so the check reads the string as the
// parser will.
const REMOVED_ANYWHERE = /[\t\n\r]/g
/** `scheme:` then any slashes and the authority (special schemes ignore extra slashes and read `\\` as `/`). */
const SCHEME_AND_AUTHORITY = /^[a-zA-Z][a-zA-Z0-9+.-]*:[/\\]*[^/\\?#]*/
/**
 * A dot segment: `.` or `..` (each dot also as `%2e`) between segment boundaries, `/`, `\\`,
 * and their encodings `%2f` and `%5c`, or the path's end.
 */
const DOT_SEGMENT_ANYWHERE = /(?:^|[/\\]|%2f|%5c)(?:\.|%2e){1,2}(?:[/\\]|%2f|%5c|$)/i

/**
 * True when the path of `url` (a string that parses as a URL) holds a dot segment — `.` or
 * `..`, also percent-encoded, once `%2f` and `%5c` are read as `/` and `\\` as `/`, as the URL
 * parser sees the string: what a `..` from a route parameter would use to walk a gateway out
 * of the prefix it was appended to. `.well-known` and `a..b` are not dot segments.
 */
export function hasDotSegment (url: string): boolean {
  // (Linear in the string's length, whatever it holds: the client chooses it.)
  const text = trimControls(url.replace(REMOVED_ANYWHERE, ''))
  const authority = SCHEME_AND_AUTHORITY.exec(text)
  const rest = authority === null ? text : text.slice(authority[0].length)
  // The path ends at the query or the fragment.
  const end = rest.search(/[?#]/)
  const path = end === -1 ? rest : rest.slice(0, end)
  // Only a path with a dot (or `%2e`) can hold a dot segment; most have none and skip the regex.
  return (path.includes('.') || path.includes('%')) && DOT_SEGMENT_ANYWHERE.test(path)
}

/** `text` without C0 controls and spaces at either end, as the URL parser strips them. */
function trimControls (text: string): string {
  let start = 0
  let end = text.length
  while (start < end && text.charCodeAt(start) <= 0x20) start++
  while (end > start && text.charCodeAt(end - 1) <= 0x20) end--
  return start === 0 && end === text.length ? text : text.slice(start, end)
}

/** The upstream URL as it may appear in logs and reports: without user:password. */
export function safeUrl (url: string | URL): string {
  const text = String(url)
  if (!text.includes('@')) return text
  try {
    const parsed = new URL(text)
    parsed.username = ''
    parsed.password = ''
    return parsed.href
  } catch {
    return '[invalid url]'
  }
}
