// The retry policy's arithmetic (plugin/retry-policy.ts), without sockets: delays grow
// exponentially from minDelay, capped at maxDelay, with jitter; retry-after counts on 429/503
// when longer. Retries over real sockets are in test/retry.test.ts.
import t from 'tap'
import { NO_RETRY, resolveRetry, retryAfterMs, statusDelay, errorDelay } from '../../plugin/retry-policy.js'

t.test('delays: exponential from minDelay, capped at maxDelay, with jitter; retry-after on 429/503 when longer', async (t) => {
  const policy = resolveRetry({ attempts: 10, minDelay: 20, maxDelay: 100, statusCodes: [429, 502, 503] }, NO_RETRY, () => { throw new Error('bad') })
  const seen = new Set<number>()
  for (let i = 0; i < 200; i++) {
    for (let tries = 1; tries < 6; tries++) {
      const delay = errorDelay(policy, tries, { code: 'ECONNRESET' })
      t.ok(delay >= 20 && delay <= Math.min(100, 20 * 2 ** tries), `try ${tries}: ${delay}`)
      seen.add(delay)
    }
  }
  t.ok(seen.size > 10, 'jittered')
  t.equal(errorDelay(policy, 10, { code: 'ECONNRESET' }), -1, 'tries used up')
  t.equal(errorDelay(policy, 1, new Error('no code')), -1)
  t.equal(statusDelay(policy, 1, 503, '2'), 2000, 'retry-after in seconds')
  t.equal(statusDelay(policy, 1, 429, ['1']), 1000)
  t.ok(statusDelay(policy, 1, 502, '2') <= 40, 'only on 429 and 503')
  t.ok(statusDelay(policy, 1, 503, '0') <= 40, 'only when longer')
  const date = statusDelay(policy, 1, 503, new Date(Date.now() + 5000).toUTCString())
  t.ok(date > 3000 && date <= 5000, `an HTTP date: ${date}`)
  t.ok(statusDelay(policy, 1, 503, 'soon') <= 40, 'unreadable: ignored')
  t.equal(retryAfterMs(new Date(Date.now() - 5000).toUTCString()), 0, 'a date in the past')
  t.equal(statusDelay(policy, 1, 404, undefined), -1)
})
