// Every test file counts toward the coverage of the plugin sources, and of nothing else (the
// examples load the built package through its name; that copy is not what we measure).
import { readdirSync } from 'node:fs'

const sources = readdirSync(new URL('../../plugin/', import.meta.url))
  .filter((name) => name.endsWith('.ts') || name.endsWith('.cts'))
  .map((name) => `plugin/${name}`)

export default function coverageMap () {
  return sources
}
