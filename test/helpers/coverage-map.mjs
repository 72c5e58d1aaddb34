// Every test file counts toward the coverage of the plugin sources, and of nothing else (the
// examples load the built package through its name; that copy is not what we measure). The
// sources are every .ts and .cts file under plugin/, in its subfolders too.
import { readdirSync, statSync } from 'node:fs'
import { sep } from 'node:path'

const root = new URL('../../plugin/', import.meta.url)
const sources = readdirSync(root, { recursive: true, encoding: 'utf8' })
  .filter((file) => (file.endsWith('.ts') || file.endsWith('.cts')) && statSync(new URL(file.split(sep).join('/'), root)).isFile())
  .map((file) => `plugin/${file.split(sep).join('/')}`)
  .sort()

export default function coverageMap () {
  return sources
}
