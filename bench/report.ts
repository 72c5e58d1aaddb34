// The tables: server CPU per request at the offered rate (the measure), then saturated req/s.
// Every ratio is paired per round (target and reference measured minutes apart at most, in the
// same round) and the pairs are combined by geometric mean; min–max shows their spread.
import { geomean, median } from './common.js'
import { key, type Results, type Window } from './measure.js'
import { alsoOf, floorOf, info, referenceOf, variant, type Scenario } from './targets.js'

interface Paired { mean: number, min: number, max: number, n: number }

/** `value(ref) / value(target)` (or the inverse), round by round. */
function paired (target: Window[], reference: Window[] | undefined, ratio: (t: Window, r: Window) => number | undefined): Paired | undefined {
  if (reference === undefined) return undefined
  const ratios: number[] = []
  for (const t of target) {
    const r = reference.find((w) => w.round === t.round)
    const value = r === undefined ? undefined : ratio(t, r)
    if (value !== undefined && Number.isFinite(value) && value > 0) ratios.push(value)
  }
  if (ratios.length === 0) return undefined
  return { mean: geomean(ratios), min: Math.min(...ratios), max: Math.max(...ratios), n: ratios.length }
}

const cpuRatio = (t: Window, r: Window): number => r.cpu / t.cpu
const rpsRatio = (t: Window, r: Window): number | undefined => t.saturated === undefined || r.saturated === undefined ? undefined : t.saturated.rps / r.saturated.rps

const two = (n: number): string => n.toFixed(2)
const spread = (p: Paired): string => `${two(p.mean)} (${two(p.min)}–${two(p.max)})`
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')

function label (name: string, baseline: string | undefined): string {
  const { target, base } = variant(name)
  return base ? `${info(target).label} — before (${baseline ?? ''})` : info(target).label
}

function referenceLabel (name: string): string {
  const reference = referenceOf(name)
  return reference === undefined ? 'reference' : info(reference).short
}

const belowRate = (list: Window[]): boolean => list.some((w) => w.achieved < 0.97 * w.offered)

/** "met", "not met", or no verdict when either side fell below the offered rate. */
function verdict (p: Paired, goal: number, target: Window[], reference: Window[]): string {
  return belowRate(target) || belowRate(reference) ? 'no verdict (saturated)' : p.mean >= goal ? 'met' : 'not met'
}

function note (name: string, path: string, list: Window[], results: Results): string {
  const notes: string[] = []
  const failure = results.failures.get(name) ?? results.failures.get(key(name, path))
  if (failure !== undefined) notes.push(`failed: ${failure}`)
  const short = list.filter((w) => w.achieved < 0.97 * w.offered)
  if (short.length > 0) notes.push(`⚠ saturated: ${fmt(Math.min(...short.map((w) => w.achieved)))} of ${fmt(short[0]?.offered ?? 0)} req/s in ${short.length} of ${list.length} rounds`)
  const also = alsoOf(name)
  const reference = also === undefined ? undefined : results.windows.get(key(also.reference, path))
  const p = also === undefined || reference === undefined ? undefined : paired(list, reference, cpuRatio)
  if (also !== undefined && reference !== undefined && p !== undefined) {
    const short = info(also.reference).short
    notes.push(`${spread(p)} × ${short} (goal ≥ ${two(also.goal)} × ${short}: ${verdict(p, also.goal, list, reference)})`)
  }
  const floor = floorOf(name)
  const floorPair = floor === undefined ? undefined : paired(list, results.windows.get(key(floor, path)), cpuRatio)
  if (floor !== undefined && floorPair !== undefined) notes.push(`${spread(floorPair)} × ${info(floor).short} (what the plugin adds)`)
  return notes.join('; ')
}

/** What the load client managed over the rounds: the lowest achieved rate, and the requests written late. */
function load (list: Window[]): string {
  const requests = list.reduce((sum, w) => sum + w.requests, 0)
  const late = list.reduce((sum, w) => sum + w.late, 0)
  const lateText = late === 0 ? 'none late' : `${fmt(late)} of ${fmt(requests)} late (${(100 * late / Math.max(1, requests)).toFixed(1)} %)`
  return `sent ${fmt(Math.min(...list.map((w) => w.achieved)))} of ${fmt(list[0]?.offered ?? 0)} req/s; ${lateText}`
}

export interface TableOptions {
  /** Add a column with what the load client achieved (lowest round) and how many requests it sent late. */
  load?: boolean
}

export function printCpuTable (results: Results, names: readonly string[], scenarios: readonly Scenario[], baseline: string | undefined, options: TableOptions = {}): void {
  const before = baseline === undefined ? '' : ' × before |'
  const loadHead = options.load === true ? ' load client (lowest round; late > 5 ms) |' : ''
  console.log(`| route | body | µs CPU / request (median, min–max) | efficiency vs reference (geomean, min–max) | target | met |${before}${loadHead} notes |`)
  console.log(`| --- | --- | ---: | --- | --- | --- |${baseline === undefined ? '' : ' ---: |'}${options.load === true ? ' --- |' : ''} --- |`)
  for (const scenario of scenarios) {
    for (const name of names.filter((n) => scenario.targets.includes(variant(n).target))) {
      const list = results.windows.get(key(name, scenario.path)) ?? []
      const notes = note(name, scenario.path, list, results)
      if (list.length === 0) {
        if (notes !== '') console.log(`| ${label(name, baseline)} | ${scenario.label} | – | – | – | – |${baseline === undefined ? '' : ' – |'}${options.load === true ? ' – |' : ''} ${notes} |`)
        continue
      }
      const cpus = list.map((w) => w.cpu)
      const { target, base } = variant(name)
      const reference = referenceOf(name)
      const p = reference === undefined ? undefined : paired(list, results.windows.get(key(reference, scenario.path)), cpuRatio)
      const efficiency = reference === undefined ? '1.00' : p === undefined ? '–' : `${spread(p)} × ${referenceLabel(name)}`
      const goal = info(target).goal
      const goalText = goal === undefined ? '—' : `≥ ${two(goal)} × ${referenceLabel(name)}`
      const met = goal === undefined || p === undefined || reference === undefined ? '—' : verdict(p, goal, list, results.windows.get(key(reference, scenario.path)) ?? [])
      let vsBefore = ''
      if (baseline !== undefined) {
        const b = info(target).plugin && !base ? paired(list, results.windows.get(key(`${name}@base`, scenario.path)), cpuRatio) : undefined
        vsBefore = ` ${b === undefined ? '–' : spread(b)} |`
      }
      const loadCell = options.load === true ? ` ${load(list)} |` : ''
      console.log(`| ${label(name, baseline)} | ${scenario.label} | ${median(cpus).toFixed(1)} (${Math.min(...cpus).toFixed(1)}–${Math.max(...cpus).toFixed(1)}) | ${efficiency} | ${goalText} | ${met} |${vsBefore}${loadCell} ${notes} |`)
    }
  }
}

export function printSaturatedTable (results: Results, names: readonly string[], scenarios: readonly Scenario[], baseline: string | undefined): void {
  console.log('| route | body | req/s (median) | × reference (geomean, min–max) | p99 ms (median) |')
  console.log('| --- | --- | ---: | --- | ---: |')
  for (const scenario of scenarios) {
    for (const name of names.filter((n) => scenario.targets.includes(variant(n).target))) {
      const list = (results.windows.get(key(name, scenario.path)) ?? []).filter((w) => w.saturated !== undefined)
      if (list.length === 0) continue
      const reference = referenceOf(name)
      const p = reference === undefined ? undefined : paired(list, results.windows.get(key(reference, scenario.path)), rpsRatio)
      const ratio = reference === undefined ? '1.00' : p === undefined ? '–' : `${spread(p)} × ${referenceLabel(name)}`
      const rps = median(list.map((w) => w.saturated?.rps ?? 0))
      const p99 = median(list.map((w) => w.saturated?.p99 ?? 0))
      console.log(`| ${label(name, baseline)} | ${scenario.label} | ${fmt(rps)} | ${ratio} | ${p99} |`)
    }
  }
}
