// Where two servers' instructions per request differ, function by function: reads two dumps
// kept by `npm run bench:instructions` (KEEP_CALLGRIND=1), names the JIT's code from the perf
// maps V8 wrote beside them (when `--perf-basic-prof` was among bench:instructions'
// `--server-flags`), and prints each function's exclusive instructions per request in both
// and the difference, largest first.
//
// npm run bench:functions -- <reference dump> <route dump> [--requests=N] [--top=N]
//   a dump is the file callgrind wrote after the count (cg.<pid>.1); N: the requests counted (8000)
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { instructionsByFunction } from './callgrind.js'
import { option } from './common.js'

const argv = process.argv.slice(2)
const files = argv.filter((arg) => !arg.startsWith('--'))
if (files.length !== 2) throw new Error('usage: bench:functions -- <reference dump> <route dump> [--requests=N] [--top=N]')
const requests = option(argv, 'requests', 8000)
const top = option(argv, 'top', 40)

interface JitEntry { start: number, end: number, name: string, line: number }

/** The JIT's code of the process that wrote `dump`, from V8's perf map, if there is one. */
function jitEntries (dump: string): JitEntry[] {
  const pid = /cg\.(\d+)/.exec(path.basename(dump))?.[1]
  const map = `/tmp/perf-${String(pid)}.map`
  if (pid === undefined || !existsSync(map)) return []
  const entries: JitEntry[] = []
  readFileSync(map, 'utf8').split('\n').forEach((text, line) => {
    const [start, size, ...name] = text.split(' ')
    if (start === undefined || size === undefined || name.length === 0) return
    const from = Number.parseInt(start, 16)
    entries.push({ start: from, end: from + Number.parseInt(size, 16), name: name.join(' '), line })
  })
  return entries.sort((a, b) => a.start - b.start)
}

/** The code at `address`: of the entries that hold it, the one written last (V8 reuses code space). */
function jitName (entries: JitEntry[], address: number): string {
  let low = 0
  let high = entries.length
  while (low < high) {
    const middle = (low + high) >> 1
    if ((entries[middle] as JitEntry).start <= address) low = middle + 1
    else high = middle
  }
  let found: JitEntry | undefined
  for (let i = low - 1; i >= 0 && i >= low - 400; i--) {
    const entry = entries[i] as JitEntry
    if (entry.start <= address && address < entry.end && (found === undefined || entry.line > found.line)) found = entry
  }
  if (found === undefined) return 'JIT code (unnamed)'
  return 'JS ' + found.name.replace(/^JS:/, '').replace(/(?:file:\/\/)?\/\S*?\/(plugin|node_modules|bench)\//, '$1/')
}

/** Exclusive instructions per counted request by function, the JIT's addresses named. */
async function functionsOf (dump: string): Promise<Map<string, number>> {
  const entries = jitEntries(dump)
  const byName = new Map<string, number>()
  for (const [raw, count] of await instructionsByFunction(dump)) {
    let name = raw.replace(/ \[\/\S*\]$/, '')
    const address = /^0x([0-9a-f]+)(?:'\d+)? \[\?\?\?\]$/.exec(name)
    if (address !== null) name = jitName(entries, Number.parseInt(address[1] as string, 16))
    byName.set(name, (byName.get(name) ?? 0) + count / requests)
  }
  return byName
}

const [reference, route] = await Promise.all(files.map(functionsOf)) as [Map<string, number>, Map<string, number>]
const total = (map: Map<string, number>): number => map.get('PROGRAM TOTALS') ?? 0
// callgrind_annotate also lists the frames every counted instruction ran under (the loader's
// entry, main, the event loop) with the whole count: not functions of interest.
const isFrame = (name: string): boolean => name === 'PROGRAM TOTALS' ||
  [reference, route].some((map) => (map.get(name) ?? 0) >= 0.999 * total(map))
const rows = [...new Set([...reference.keys(), ...route.keys()])]
  .filter((name) => !isFrame(name))
  .map((name) => ({ name, a: reference.get(name) ?? 0, b: route.get(name) ?? 0 }))
  .sort((x, y) => Math.abs(y.b - y.a) - Math.abs(x.b - x.a))
const format = (value: number): string => Math.round(value).toLocaleString('en-US')
console.log(`instructions per request: ${format(total(reference))} (reference) and ${format(total(route))} (route), ${format(total(route) - total(reference))} apart\n`)
console.log('| function | reference | route | difference |')
console.log('| --- | ---: | ---: | ---: |')
for (const { name, a, b } of rows.slice(0, top)) {
  console.log(`| ${name.slice(0, 110).replaceAll('|', '\\|')} | ${format(a)} | ${format(b)} | ${b >= a ? '+' : ''}${format(b - a)} |`)
}
