// Headless Chromium for the browser tests: playwright-core driving the system's `chromium`
// (the Debian package), installed with apt when missing and possible. `launchChromium()` gives
// the browser, or the reason it cannot run here (the test is then skipped with that reason).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Installs Debian's chromium when it is missing and apt can; the reason it cannot otherwise. */
function findChromium (): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  if (process.platform !== 'linux' || process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    return `${CHROMIUM} is missing and cannot be installed here (needs Debian/Ubuntu and root): apt-get install chromium`
  }
  const apt = (args: string[], timeout: number): boolean => spawnSync('apt-get', [
    '-o', 'Acquire::Retries=0', '-o', 'Acquire::http::Timeout=10', '-o', 'DPkg::Lock::Timeout=10', ...args
  ], { stdio: 'ignore', timeout, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0
  const installed = apt(['install', '-y', '--no-install-recommends', 'chromium'], 30_000) ||
    (apt(['update'], 30_000) && apt(['install', '-y', '--no-install-recommends', 'chromium'], 30_000))
  if (installed && existsSync(CHROMIUM)) return undefined
  return `${CHROMIUM} is missing and 'apt-get install chromium' failed (no network?)`
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
