// The server-sent events example in a real browser: its page in headless Chromium shows the
// clock's events live as they arrive, and a message published from the page's form; a page
// that closes leaves the source and pending(). Skipped, with the reason, when Chromium cannot
// run here (see helpers/chromium.ts).
import type { Browser } from 'playwright-core'
import t from 'tap'
import { buildEventsApp, EventHub } from '../../examples/events.js'
import '../helpers/app.js' // unhandled rejections fail the run
import { launchChromium } from '../helpers/chromium.js'
import { waitFor } from '../helpers/client.js'

const { browser, skip } = await launchChromium()
if (browser !== undefined) t.teardown(() => browser.close())
if (skip !== undefined) t.comment(`skipping the browser test: ${skip}`)

// Browser-side code. The test is compiled without DOM types: what it touches is typed here.
interface BrowserGlobals {
  shown: Array<{ id: string, at: number }>
}

/** Records, in the page, each event item as it appears and when. */
const SHOWN = `window.shown = []
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes) {
    if (node.dataset && node.dataset.id !== undefined) window.shown.push({ id: node.dataset.id, at: Date.now() })
  }
}).observe(document, { childList: true, subtree: true })`

t.test('the page shows events live, and what its form publishes; a closed page leaves', { skip: skip ?? false }, async (t) => {
  const hub = new EventHub(200)
  const app = await buildEventsApp({ hub, idleTimeout: 2_000, clockMs: 150, fastify: { logger: false } })
  t.teardown(() => app.close())
  const url = await app.listen({ port: 0, host: '127.0.0.1' })

  const context = await (browser as Browser).newContext()
  await context.addInitScript({ content: SHOWN })
  const page = await context.newPage()
  await page.goto(url)
  await waitFor(() => hub.subscribers === 1, 5000, 'the page to subscribe')
  t.equal(app.asyncRoute.pending().length, 1)

  const shown = (): Promise<BrowserGlobals['shown']> => page.evaluate(() => (globalThis as unknown as BrowserGlobals).shown)
  await page.waitForFunction(() => (globalThis as unknown as BrowserGlobals).shown.length >= 3, undefined, { timeout: 5000, polling: 20 })
  const first = await shown()
  const spread = (first[2]?.at ?? 0) - (first[0]?.at ?? 0)
  t.ok(spread >= 150, `shown one by one as they arrive, not all at once (${spread} ms between the 1st and 3rd)`)
  t.match(await page.textContent('#status'), 'live')
  t.match(await page.textContent('#events li.tick'), /^tick #\d+: \d{4}-\d\d-\d\dT/)

  await page.fill('#text', 'hello from the page <b>not bold</b>')
  await page.click('button[type=submit]')
  await page.waitForSelector('#events li.message', { timeout: 5000 })
  t.match(await page.textContent('#events li.message'), /^message #\d+: hello from the page <b>not bold<\/b>$/)
  t.equal(await page.locator('#events b').count(), 0, 'text, never HTML')

  await context.close()
  await waitFor(() => hub.subscribers === 0 && app.asyncRoute.pending().length === 0, 5000, 'the closed page to leave')
  t.equal(app.asyncRoute.stats().aborted, 1)
})
