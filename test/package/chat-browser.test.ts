// The chat example in a real browser: two pages in headless Chromium (playwright-core driving
// the system's `chromium`), a post from one appears in the other within 500 ms, and a page
// that closes leaves the waiter list and pending(); and the same conversation with the two pages
// served by two processes sharing the room through Redis. Chromium is the Debian package and
// redis-server too (.ci/run installs them); without them the tests are skipped with the reason.
// `CHAT_SCREENSHOT=docs/chat.png` also saves a screenshot of a conversation.
import path from 'node:path'
import type { Browser, Page } from 'playwright-core'
import t from 'tap'
import { buildChatApp, MessageBuffer } from '../../examples/chat/chat.js'
import '../helpers/app.js' // unhandled rejections fail the run
import { launchChromium } from '../helpers/chromium.js'
import { sleep, waitFor } from '../helpers/client.js'
import type { Test } from '../helpers/context.js'
import { startExample } from '../helpers/example.js'
import { redisMissing, startRedis } from '../helpers/redis.js'

const { browser, skip } = await launchChromium()
if (browser !== undefined) t.teardown(() => browser?.close())
if (skip !== undefined) t.comment(`skipping the browser test: ${skip}`)

// Browser-side code. The test is compiled without DOM types: what it touches is typed here.
interface BrowserGlobals {
  seen: Record<string, number>
  document: { querySelector: (selector: string) => { click: () => void } }
}

/**
 * Records, in each page, the time each message appears (by the same clock as the click's), by
 * its text (its id is the room's: 1, 2, 3… in memory, Redis's clock in µs when shared).
 */
const SEEN = `window.seen = {}
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes) {
    if (node.dataset && node.dataset.id !== undefined) window.seen[node.lastChild.textContent] = Date.now()
  }
}).observe(document, { childList: true, subtree: true })`

/** How many long polls each page has open (seen from the browser's side). */
const open = new WeakMap<Page, number>()

/** A page of its own browser context (its own connections), recording when each message appears. */
async function openPage (url: string, height = 420): Promise<Page> {
  const context = await (browser as Browser).newContext({ viewport: { width: 640, height } })
  await context.addInitScript({ content: SEEN })
  const page = await context.newPage()
  open.set(page, 0)
  const count = (by: number) => (request: { url: () => string }) => {
    if (request.url().includes('/a/message/updates')) open.set(page, (open.get(page) ?? 0) + by)
  }
  page.on('request', count(1))
  page.on('requestfinished', count(-1))
  page.on('requestfailed', count(-1))
  await page.goto(url)
  return page
}

async function postFrom (page: Page, text: string): Promise<number> {
  await page.fill('#body', text)
  return await page.evaluate(() => {
    const sentAt = Date.now()
    ;(globalThis as unknown as BrowserGlobals).document.querySelector('button[type=submit]').click()
    return sentAt
  })
}

const seenAt = (page: Page, text: string): Promise<number> =>
  page.waitForFunction((text) => (globalThis as unknown as BrowserGlobals).seen[text], text, { timeout: 5000, polling: 20 })
    .then(async (handle) => await handle.jsonValue())

/**
 * Alice and Bob talk: a first message (also a warm-up: the pages have just loaded and render in
 * software), then three each way, timed from the click in one page to the message in the other.
 * `polling()` resolves once both pages have a poll waiting.
 */
async function converse (t: Test, alice: Page, bob: Page, polling: () => Promise<void>): Promise<void> {
  await polling()
  const hello = 'hello from alice <b>not bold</b>'
  await postFrom(alice, hello)
  await seenAt(bob, hello)
  t.equal(await bob.textContent('.message') ?? '', `${await bob.textContent('.message time') ?? ''}${hello}`)
  t.equal(await bob.locator('.message b').count(), 0, 'text, never HTML')
  await seenAt(alice, hello)
  t.equal(await alice.locator('.message').count(), 1, 'the sender sees it once, through its own poll')

  const latencies: number[] = []
  const exchange = [[bob, alice, 'hi alice! bob here'], [alice, bob, 'hi bob, did it arrive at once?'], [bob, alice, 'it did: my page was waiting on a long poll']] as const
  for (const [from, to, text] of exchange) {
    await polling()
    const sentAt = await postFrom(from, text)
    latencies.push(await seenAt(to, text) - sentAt)
    await seenAt(from, text)
  }
  const median = [...latencies].sort((a, b) => a - b)[1] as number
  t.ok(median < 500, `shown in the other page within 500 ms (${latencies.join(', ')} ms after the click)`)
  t.ok(latencies.every((ms) => ms < 2000), 'none slower than 2 s, even on a loaded machine')
  t.same(await bob.locator('.message').allTextContents(), await alice.locator('.message').allTextContents(), 'both pages show the same conversation')
}

t.test('two pages: a post from one appears in the other; a closed page leaves', { skip: skip ?? false }, async (t) => {
  const room = new MessageBuffer()
  const app = await buildChatApp({ room, pollTimeout: 10_000, fastify: { logger: false } })
  t.teardown(() => app.close())
  const url = await app.listen({ port: 0, host: '127.0.0.1' })

  const [alice, bob] = await Promise.all([openPage(url), openPage(url)])
  await waitFor(() => room.waiting === 2, 5000, 'both pages to poll')
  t.equal(app.asyncRoute.pending().length, 2)
  await converse(t, alice, bob, () => waitFor(() => room.waiting === 2, 5000, 'both pages to poll again'))

  await waitFor(() => room.waiting === 2, 5000, 'both pages to poll again')
  await bob.context().close()
  await waitFor(() => room.waiting === 1 && app.asyncRoute.pending().length === 1, 5000, 'the closed page to leave')
  t.equal(app.asyncRoute.stats().aborted, 1, 'counted as a client that left')

  const screenshot = process.env.CHAT_SCREENSHOT
  if (screenshot !== undefined && screenshot !== '') {
    const carol = await openPage(url, 560)
    await waitFor(() => room.waiting === 2, 5000, 'the new page to poll')
    for (const [page, text] of [[carol, 'carol here: I just opened the page and got the whole conversation'], [alice, 'welcome carol! every open page gets each message at once'], [carol, 'plain HTML and a small script, no build step']] as const) {
      await postFrom(page, text)
      await seenAt(alice, text)
      await seenAt(carol, text)
    }
    await carol.screenshot({ path: path.resolve(screenshot) })
    t.comment(`screenshot saved to ${screenshot}`)
    await carol.context().close()
  }
  await alice.context().close()
})

t.test('two pages on two processes sharing the room through Redis; a page opened later on a third', { skip: skip ?? redisMissing() ?? false }, async (t) => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url }
  const [one, two] = await Promise.all([startExample(t, 'examples/chat/main.ts', env), startExample(t, 'examples/chat/main.ts', env)])
  const [alice, bob] = await Promise.all([openPage(`${one.address}/`), openPage(`${two.address}/`)])
  // The waiter lists are in the other processes: here, a page has a poll waiting when one of its
  // requests for updates is open (a short pause lets the server take it in).
  const polling = async (): Promise<void> => {
    await waitFor(() => open.get(alice) === 1 && open.get(bob) === 1, 5000, 'both pages to poll')
    await sleep(50)
  }
  await converse(t, alice, bob, polling)

  const later = await startExample(t, 'examples/chat/main.ts', env)
  const carol = await openPage(`${later.address}/`)
  await carol.waitForFunction(() => (globalThis as unknown as BrowserGlobals).document.querySelector('.message:nth-of-type(4)') !== null, undefined, { timeout: 5000 })
  t.same(await carol.locator('.message').allTextContents(), await alice.locator('.message').allTextContents(), 'a page on a process started later shows the whole conversation')
  for (const page of [alice, bob, carol]) await page.context().close()
})
