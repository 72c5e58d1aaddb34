// A short soak inside the normal test run (`npm run soak` is the long one): mixed traffic
// with injected faults, then every request accounted for and nothing leaked.
import t from 'tap'
import { runSoak } from './soak/soak.js'

t.test('15 s of mixed faulty traffic: every request ends as the contract says, nothing leaks', async (t) => {
  const result = await runSoak({ durationMs: 15_000, concurrency: 50 })
  t.comment(result.report)
  t.same(result.problems, [], 'no wrong outcome, no lost request, no leak')
  t.ok(result.ok, 'verdict PASS')
})
