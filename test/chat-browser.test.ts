// The chat example in a real browser: two pages in headless Chromium (playwright-core driving
// the system's `chromium`), a post from one appears in the other within 500 ms, and a page
// that closes leaves the waiter list and pending(). Chromium is the Debian package: installed
// with apt when missing and possible, otherwise the test is skipped with the reason (see
// helpers/chromium.ts).
// `CHAT_SCREENSHOT=docs/chat.png` also saves a screenshot of a conversation.
import path from 'node:path'
import type { Browser, Page } from 'playwright-core'
import t from 'tap'
import { buildChatApp, MessageBuffer } from '../examples/chat/chat.js'
import './helpers/app.js' // unhandled rejections fail the run
import { launchChromium } from './helpers/chromium.js'
import { waitFor } from './helpers/client.js'

const { browser, skip } = await launchChromium()
if (browser !== undefined) t.teardown(() => browser?.close())
if (skip !== undefined) t.comment(`skipping the browser test: ${skip}`)

// Browser-side code. The test is compiled without DOM types: what it touches is typed here.
interface BrowserGlobals {
  seen: Record<number, number>
  document: { querySelector: (selector: string) => { click: () => void } }
}

/** Records, in each page, the time each message appears (by the same clock as the click's). */
const SEEN = `window.seen = {}
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes) {
    if (node.dataset && node.dataset.id !== undefined) window.seen[node.dataset.id] = Date.now()
  }
}).observe(document, { childList: true, subtree: true })`

/** A page of its own browser context (its own connections), recording when each message appears. */
async function openPage (url: string, height = 420): Promise<Page> {
  const context = await (browser as Browser).newContext({ viewport: { width: 640, height } })
  await context.addInitScript({ content: SEEN })
  const page = await context.newPage()
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

const seenAt = (page: Page, id: number): Promise<number> =>
  page.waitForFunction((id) => (globalThis as unknown as BrowserGlobals).seen[id], id, { timeout: 5000, polling: 20 })
    .then(async (handle) => await handle.jsonValue())

t.test('two pages: a post from one appears in the other; a closed page leaves', { skip: skip ?? false }, async (t) => {
  const room = new MessageBuffer()
  const app = await buildChatApp({ room, pollTimeout: 10_000, fastify: { logger: false } })
  t.teardown(() => app.close())
  const url = await app.listen({ port: 0, host: '127.0.0.1' })

  const [alice, bob] = await Promise.all([openPage(url), openPage(url)])
  await waitFor(() => room.waiting === 2, 5000, 'both pages to poll')
  t.equal(app.asyncRoute.pending().length, 2)

  // The first exchange, also a warm-up (the pages have just loaded and render in software).
  await postFrom(alice, 'hello from alice <b>not bold</b>')
  await seenAt(bob, 1)
  t.equal(await bob.textContent('.message[data-id="1"]') ?? '', `${await bob.textContent('.message[data-id="1"] time') ?? ''}hello from alice <b>not bold</b>`)
  t.equal(await bob.locator('.message b').count(), 0, 'text, never HTML')
  await seenAt(alice, 1)
  t.equal(await alice.locator('.message').count(), 1, 'the sender sees it once, through its own poll')

  // Then, each way: from the click in one page to the message in the other.
  const latencies: number[] = []
  const exchange = [[2, bob, alice, 'hi alice! bob here'], [3, alice, bob, 'hi bob, did it arrive at once?'], [4, bob, alice, 'it did: my page was waiting on a long poll']] as const
  for (const [id, from, to, text] of exchange) {
    await waitFor(() => room.waiting === 2, 5000, 'both pages to poll again')
    const sentAt = await postFrom(from, text)
    latencies.push(await seenAt(to, id) - sentAt)
    await seenAt(from, id)
  }
  const median = [...latencies].sort((a, b) => a - b)[1] as number
  t.ok(median < 500, `shown in the other page within 500 ms (${latencies.join(', ')} ms after the click)`)
  t.ok(latencies.every((ms) => ms < 2000), 'none slower than 2 s, even on a loaded machine')
  t.same(await bob.locator('.message').allTextContents(), await alice.locator('.message').allTextContents(), 'both pages show the same conversation')

  await waitFor(() => room.waiting === 2, 5000, 'both pages to poll again')
  await bob.context().close()
  await waitFor(() => room.waiting === 1 && app.asyncRoute.pending().length === 1, 5000, 'the closed page to leave')
  t.equal(app.asyncRoute.stats().aborted, 1, 'counted as a client that left')

  const screenshot = process.env.CHAT_SCREENSHOT
  if (screenshot !== undefined && screenshot !== '') {
    const carol = await openPage(url, 560)
    await waitFor(() => room.waiting === 2, 5000, 'the new page to poll')
    for (const [page, text] of [[carol, 'carol here: I just opened the page and got the whole conversation'], [alice, 'welcome carol! every open page gets each message at once'], [carol, 'plain HTML and a small script, no build step']] as const) {
      const id = room.since(0).length + 1
      await postFrom(page, text)
      await seenAt(alice, id)
      await seenAt(carol, id)
    }
    await carol.screenshot({ path: path.resolve(screenshot) })
    t.comment(`screenshot saved to ${screenshot}`)
    await carol.context().close()
  }
  await alice.context().close()
})
