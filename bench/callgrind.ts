// Reading callgrind's dumps: each function's exclusive instruction count, as callgrind_annotate
// prints it (`???:` dropped; JIT code appears as a bare address, `0x… [???]`).
import { run } from './common.js'

/** Exclusive instructions by function name in the dump `file`, with the whole count as 'PROGRAM TOTALS'. */
export async function instructionsByFunction (file: string): Promise<Map<string, number>> {
  const out = await run('callgrind_annotate', ['--inclusive=no', '--threshold=100', file])
  const byName = new Map<string, number>()
  for (const line of out.split('\n')) {
    const match = /^\s*([\d,]+) \([^)]*\)\s+(?:\?\?\?:)?(.*)$/.exec(line)
    if (match === null) continue
    const name = match[2] as string
    byName.set(name, (byName.get(name) ?? 0) + Number((match[1] as string).replaceAll(',', '')))
  }
  return byName
}
