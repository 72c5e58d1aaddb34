// splitUrl() splits string URLs without a WHATWG parse when it can: whatever it does,
// the origin and path must be exactly what `new URL()` gives (or it must throw where that throws,
// and for any scheme but http: and https:).
import { test } from 'tap'
import { splitUrl } from '../../plugin/target.js'

function expected (url: string | URL): { origin: string, path: string } | 'throws' {
  try {
    const parsed = new URL(url)
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'throws'
    return { origin: parsed.origin, path: parsed.pathname + parsed.search }
  } catch {
    return 'throws'
  }
}

function actual (url: string | URL): { origin: string, path: string } | 'throws' {
  try {
    const { origin, path } = splitUrl(url)
    return { origin, path }
  } catch {
    return 'throws'
  }
}

const CASES = [
  'http://127.0.0.1:8080/',
  'http://127.0.0.1:8080/small',
  'http://127.0.0.1:8080/a/b.json?x=1&y=%20z',
  'http://127.0.0.1:8080',
  'http://127.0.0.1:8080?q=1',
  'http://127.0.0.1:8080#frag',
  'HTTP://Example.COM:80/Path',
  'https://example.com:443/a',
  'http://example.com:08080/a',
  'http://bücher.example/a',
  'http://user:pass@example.com/a',
  'http://example.com/a b',
  'http://example.com/a"b',
  'http://example.com/a#frag',
  'http://example.com/a?b#frag',
  'http://example.com/a?it\'s',
  'http://example.com/a/./b',
  'http://example.com/a/../b',
  'http://example.com/a/..',
  'http://example.com/a/.',
  'http://example.com/a/%2e%2E/b',
  'http://example.com/a?x=/../y',
  'http://example.com/ü',
  'http://example.com/a\\b',
  'http://example.com/{x}',
  'http://example.com//double//slash',
  'http://example.com/%zz',
  'http://ex\tample.com/a',
  ' http://example.com/a',
  'http:///example.com/a',
  'http:\\\\example.com\\a',
  'http:/example.com/a',
  'http://example.com:99999/a',
  'http://[::1]:8080/a',
  'http://[::1/a',
  'ftp://example.com/a',
  'foo://example.com/a',
  'mailto:someone@example.com',
  'not a url',
  '/relative/path',
  '',
  new URL('http://example.com/from-an-object?q=1'),
  new URL('http://example.com')
]

test('the origin and path of an upstream URL are those new URL() gives', async (t) => {
  for (const url of CASES) {
    // Twice: the second time the origin comes from the cache.
    t.same(actual(url), expected(url), String(url))
    t.same(actual(url), expected(url), `${String(url)} (again)`)
  }
})

test('many distinct origins: the cache stays bounded and answers stay right', async (t) => {
  for (let port = 1000; port < 1600; port++) {
    const url = `http://127.0.0.1:${port}/p?x=${port}`
    t.same(actual(url), expected(url))
  }
  t.same(actual('http://127.0.0.1:1000/p'), { origin: 'http://127.0.0.1:1000', path: '/p' })
})

test('a URL split as it is never holds a dot segment: skipping the dot-segment check for it changes no answer', async (t) => {
  const { hasDotSegment } = await import('../../plugin/target.js')
  const { targetOf } = await import('../../plugin/preflight.js')
  const pieces = ['/', '.', '..', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '\\', 'a', '?', '#', ';', '\t', ' ', '%00', '~', '-', '_']
  // xorshift32: the same strings on every run.
  let seed = 2463534242
  const random = (n: number): number => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  let verbatim = 0
  for (let i = 0; i < 20_000; i++) {
    let path = '/'
    for (let j = random(8); j >= 0; j--) path += pieces[random(pieces.length)] as string
    const url = `http://example.com${path}`
    const target = targetOf(url)
    const split = !(target instanceof Error) && target.verbatim === true
    if (split) verbatim++
    if (split && hasDotSegment(url)) t.fail(`split as it is, yet a dot segment: ${JSON.stringify(url)}`)
    const refused = target instanceof Error && (target as { code?: string }).code === 'FST_ASYNC_ROUTE_BAD_PATH'
    let parses = true
    try { new URL(url) } catch { parses = false } // eslint-disable-line no-new
    if (parses && refused !== hasDotSegment(url)) t.fail(`targetOf and hasDotSegment disagree on ${JSON.stringify(url)}`)
  }
  t.ok(verbatim > 1000, `the split path was taken (${verbatim} of 20,000)`)
})
