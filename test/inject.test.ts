// `app.inject()` with the plugin's timers: while a reply waits on one of them, it keeps the
// process alive; once nothing waits, the plugin holds the process open by nothing. Each case
// runs in a child process where nothing else is alive: it must print the answer, then exit
// with code 0 on its own (13 would be Node's "unsettled top-level await": the process ran out
// of work while the reply waited).
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import type { Teardown } from './helpers/context.js'
import { startUpstream } from './helpers/upstream.js'

const SCRIPT = fileURLToPath(new URL('./fixtures/inject-waiting.ts', import.meta.url))

async function run (test: Teardown, ...args: string[]): Promise<{ code: number | null, out: string, ms: number }> {
  const started = Date.now()
  const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  test.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, out: out.trim(), ms: Date.now() - started }
}

for (const which of ['watchdog', 'own-watchdog', 'idle']) {
  t.test(`${which}: the answer, then the process ends on its own`, async (t) => {
    const { code, out } = await run(t, which)
    if (which === 'own-watchdog') t.match(out, /^504 \{"statusCode":504,"code":"FST_ASYNC_ROUTE_TIMEOUT"/)
    else t.equal(out, '200 {"messages":[]}')
    t.equal(code, 0)
  })
}

t.test('retry: the wait before the next try keeps the process alive', async (t) => {
  let tries = 0
  const up = await startUpstream((_req, res) => {
    // No keep-alive: the child's only handle during the wait is the retry timer.
    res.setHeader('connection', 'close')
    res.statusCode = ++tries === 1 ? 503 : 200
    res.end(tries === 1 ? 'busy' : 'fresh')
  })
  t.teardown(up.close)
  const { code, out } = await run(t, 'retry', up.url)
  t.equal(out, '200 fresh')
  t.equal(tries, 2)
  t.equal(code, 0)
})
