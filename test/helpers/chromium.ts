// Headless Chromium for the browser tests: playwright-core driving the system's `chromium`
// (the Debian package, which .ci/run installs with apt when missing; the tests install nothing).
// `launchChromium()` gives the browser, or the reason it cannot run here (the test is then
// skipped with that reason).
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Why Debian's chromium cannot run here, or undefined when it is installed. */
function findChromium (): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  return `${CHROMIUM} is missing (apt-get install chromium; .ci/run does)`
}

export async function launchChromium (): Promise<{ browser?: Browser, skip?: string }> {
  const skip = findChromium()
  if (skip !== undefined) return { skip }
  try {
    return { browser: await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 15_000 }) }
  } catch (error) {
    return { skip: `chromium did not start: ${(error as Error).message.split('\n')[0] ?? ''}` }
  }
}
