// `npm run soak [-- --duration 60 --concurrency 200]`: runs the soak and prints its summary;
// exits 1 when the verdict is FAIL.
import { parseArgs } from 'node:util'
import { runSoak } from './soak.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '200' }
  }
})
const durationMs = Math.round(Number(values.duration) * 1000)
const concurrency = Number(values.concurrency)
if (!(durationMs > 0) || !Number.isInteger(concurrency) || concurrency < 1) {
  console.error('usage: npm run soak -- [--duration seconds] [--concurrency clients]')
  process.exit(2)
}
const result = await runSoak({ durationMs, concurrency, print: (line) => console.log(line) })
process.exitCode = result.ok ? 0 : 1
