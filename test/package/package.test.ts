// The package as npm publishes it: `npm pack` holds the built code and nothing else, and
// consumer projects outside this repository use the tarball the way users do: an ESM and a
// CommonJS app answer a request over a real socket, and TypeScript projects type-check under
// moduleResolution node16, nodenext and bundler.
//
// The tarball is unpacked into the consumer's node_modules as `npm install` would; its declared
// dependencies (and the fastify peer) are linked from this repository's node_modules, so the
// test needs no network, and a module the package uses without declaring it fails to resolve.
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const run = promisify(execFile)

/** The environment of a user's shell: without tap's loaders and coverage hooks. */
function userEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(NODE_OPTIONS|NODE_V8_COVERAGE|TS_NODE_|TAP|_TAPJS_)/.test(key)) continue
    env[key] = value
  }
  return env
}

const work = await mkdtemp(path.join(tmpdir(), 'fastify-async-route-package-'))
t.teardown(() => rm(work, { recursive: true, force: true }))

// --ignore-scripts: pack the dist/ that `npm test` built, without rebuilding it under the feet
// of the other test files.
const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, env: userEnv() })
const [pack] = JSON.parse(packed.stdout) as Array<{ filename: string, integrity: string, files: Array<{ path: string }> }>
const tarball = path.join(work, pack!.filename)
const packedFiles = pack!.files.map((file) => file.path).sort()

/** A project directory whose node_modules holds the unpacked tarball and its dependencies. */
async function consumer (name: string, devDependencies: string[] = []): Promise<string> {
  const dir = path.join(work, name)
  const installed = path.join(dir, 'node_modules', 'fastify-async-route')
  await mkdir(installed, { recursive: true })
  await run('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'])
  const manifest = JSON.parse(await readFile(path.join(installed, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>
    peerDependencies?: Record<string, string>
  }
  const names = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {}), ...devDependencies]
  for (const dependency of names) {
    const link = path.join(dir, 'node_modules', dependency)
    await mkdir(path.dirname(link), { recursive: true })
    await symlink(path.join(ROOT, 'node_modules', dependency), link, 'dir')
  }
  return dir
}

t.test('npm pack ships the build, its sources, the docs, the examples and the manifest, nothing else', async (t) => {
  const allowed = /^(dist\/[\w-]+\.(js|cjs|d\.ts|d\.cts|js\.map|cjs\.map)|plugin\/[\w-]+\.c?ts|examples\/[\w/.-]+|docs\/[\w-]+\.(md|png)|README\.md|CHANGELOG\.md|LICENSE|package\.json)$/
  t.strictSame(packedFiles.filter((file) => !allowed.test(file)), [], 'no tests, sources, configs or build info')
  // The README's links into examples/ must not be dead for a reader on npm.
  const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8')
  for (const [, link] of readme.matchAll(/\]\((examples\/[^)#]+)\)/g)) {
    t.ok(packedFiles.some((file) => file === link || file.startsWith(`${link}/`)), `${link} (linked from the README) is in the package`)
  }
  for (const file of ['dist/index.js', 'dist/index.cjs', 'dist/index.d.ts', 'dist/index.d.cts', 'README.md', 'CHANGELOG.md', 'LICENSE', 'package.json']) {
    t.ok(packedFiles.includes(file), `${file} is in the package`)
  }
  // Every module of the build has its declarations (examples/ also holds a browser script),
  // and a source map whose sources are shipped: the plugin/*.ts files that stack traces
  // (--enable-source-maps) and debuggers name exist in the installed package.
  for (const file of packedFiles.filter((file) => /^dist\/.*\.c?js$/.test(file))) {
    t.ok(packedFiles.includes(file.replace(/\.js$/, '.d.ts').replace(/\.cjs$/, '.d.cts')), `${file} has declarations`)
    t.ok(packedFiles.includes(`${file}.map`), `${file} has a source map`)
  }
  const dir = await consumer('files')
  const maps = packedFiles.filter((file) => file.endsWith('.map'))
  const named = new Set<string>()
  for (const file of maps) {
    const map = JSON.parse(await readFile(path.join(dir, 'node_modules', 'fastify-async-route', file), 'utf8')) as { sources: string[], sourceRoot?: string }
    t.equal(map.sources.length, 1, `${file} names one source`)
    for (const source of map.sources) {
      const resolved = path.posix.join(path.posix.dirname(file), map.sourceRoot ?? '', source)
      named.add(resolved)
      t.ok(packedFiles.includes(resolved), `${file}: ${source} resolves to ${resolved}, which is shipped`)
    }
  }
  t.strictSame(packedFiles.filter((file) => file.startsWith('plugin/')), [...named].sort(), 'the sources shipped are the ones the maps name')

  // A stack trace through the installed package names a TypeScript file that is there.
  const traced = await run(process.execPath, ['--enable-source-maps', '-e',
    "const { InvalidOptionError } = require('fastify-async-route'); console.log(new InvalidOptionError('x').stack)"], { cwd: dir, env: userEnv() })
  const frame = /\((\/[^():]+\/node_modules\/fastify-async-route\/plugin\/errors\.ts):\d+:\d+\)/.exec(traced.stdout)
  t.ok(frame, `the stack names plugin/errors.ts: ${traced.stdout}`)
  t.equal(await readFile(frame![1]!, 'utf8').then(() => true, () => false), true, 'that file exists')
})

interface LockEntry {
  version?: string
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  [field: string]: unknown
}

/**
 * A lock file for a project that depends on the tarball alone: the tarball's dependency tree,
 * taken from this repository's lock file. `npm ci --offline` installs it from npm's cache,
 * which this repository's own `npm ci` filled: no network, and the same engine checks and
 * layout as a user's `npm install`.
 */
function consumerLock (manifest: { version: string, dependencies: Record<string, string>, peerDependencies: Record<string, string>, engines: Record<string, string> }, root: Record<string, LockEntry>, spec: string): object {
  const packages: Record<string, LockEntry> = {
    '': { name: 'consumer', dependencies: { 'fastify-async-route': spec } },
    'node_modules/fastify-async-route': {
      version: manifest.version,
      resolved: spec,
      integrity: pack!.integrity,
      dependencies: manifest.dependencies,
      peerDependencies: manifest.peerDependencies,
      engines: manifest.engines
    }
  }
  // Node's resolution: the nearest node_modules/<name> from the dependent up to the root.
  const locate = (from: string, name: string): string => {
    for (let at = from; ; at = at.slice(0, Math.max(0, at.lastIndexOf('/node_modules/')))) {
      const key = `${at === '' ? '' : `${at}/`}node_modules/${name}`
      if (root[key] !== undefined) return key
      if (at === '') throw new Error(`${name} (needed by ${from}) is not in package-lock.json`)
    }
  }
  const add = (from: string, dependencies: Record<string, string> | undefined): void => {
    for (const name of Object.keys(dependencies ?? {})) {
      const key = locate(from, name)
      if (packages[key] !== undefined) continue
      const { dev, devOptional, optional, peer, ...entry } = root[key]!
      packages[key] = entry
      add(key, { ...entry.dependencies, ...entry.optionalDependencies })
    }
  }
  add('node_modules/fastify-async-route', manifest.dependencies)
  return { name: 'consumer', lockfileVersion: 3, requires: true, packages }
}

/** Every package installed under a node_modules directory, nested ones included. */
async function installedPackages (modules: string): Promise<Array<{ name: string, version: string }>> {
  const found: Array<{ name: string, version: string }> = []
  const entries = await readdir(modules, { withFileTypes: true }).catch(() => [])
  for (const entry of entries) {
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue
    const dirs = entry.name.startsWith('@')
      ? (await readdir(path.join(modules, entry.name))).map((name) => path.join(modules, entry.name, name))
      : [path.join(modules, entry.name)]
    for (const dir of dirs) {
      const { name, version } = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as { name: string, version: string }
      found.push({ name, version }, ...await installedPackages(path.join(dir, 'node_modules')))
    }
  }
  return found
}

t.test('npm install on Node 20.19 brings one undici and no engine warning', async (t) => {
  const dir = path.join(work, 'npm-install')
  await mkdir(dir)
  const manifest = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8'))
  const lock = JSON.parse(await readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> }
  const spec = `file:../${pack!.filename}`
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, dependencies: { 'fastify-async-route': spec } }))
  await writeFile(path.join(dir, 'package-lock.json'), JSON.stringify(consumerLock(manifest, lock.packages, spec)))
  // --node-version: npm checks engines against the oldest supported Node whatever runs it.
  // --legacy-peer-deps: the fastify peer is the app's own (and fastify 5.12's tree has an
  // engine warning of its own on Node 20, cookie@2 through light-my-request).
  const installed = await run('npm', ['ci', '--offline', '--legacy-peer-deps', '--no-audit', '--no-fund', '--ignore-scripts', '--node-version=20.19.0'], { cwd: dir, env: userEnv() })
  const output = installed.stdout + installed.stderr
  t.notMatch(output, /EBADENGINE/, 'no EBADENGINE warning')
  const undicis = (await installedPackages(path.join(dir, 'node_modules'))).filter((found) => found.name === 'undici')
  t.strictSame(undicis.map((found) => found.version.split('.')[0]), ['7'], 'one undici, 7, its own')
})

t.test('require() gives the same names as import: the plugin with every named export as a property', async (t) => {
  const dir = await consumer('names')
  const esm = await run(process.execPath, ['--input-type=module', '-e',
    "import * as entry from 'fastify-async-route'; console.log(JSON.stringify(Object.keys(entry)))"], { cwd: dir, env: userEnv() })
  const cjs = await run(process.execPath, ['-e', `const entry = require('fastify-async-route')
console.log(JSON.stringify({ names: Object.keys(entry), plugin: typeof entry, error: new entry.TimeoutError(5).code, same: entry.TimeoutError === entry.default.TimeoutError }))`], { cwd: dir, env: userEnv() })
  const names = JSON.parse(esm.stdout) as string[]
  const required = JSON.parse(cjs.stdout) as { names: string[], plugin: string, error: string, same: boolean }
  t.strictSame(required.names.sort(), names.sort(), 'the same set of names')
  t.ok(names.includes('TimeoutError') && names.includes('InvalidOptionError'), 'the error classes among them')
  t.strictSame({ plugin: required.plugin, error: required.error, same: required.same }, { plugin: 'function', error: 'FST_ASYNC_ROUTE_TIMEOUT', same: true })
})

/** The same tiny app in both module formats: an async route that fetches from a plain one. */
function app (format: 'esm' | 'cjs'): string {
  const imports = format === 'esm'
    ? `import Fastify from 'fastify'
import asyncRoute, { asyncRoute as named } from 'fastify-async-route'
const shape = { named: named === asyncRoute, default: asyncRoute.default === asyncRoute }`
    : `const Fastify = require('fastify')
const asyncRoute = require('fastify-async-route')
const shape = { plugin: typeof asyncRoute, named: asyncRoute.asyncRoute === asyncRoute, default: asyncRoute.default === asyncRoute }`
  return `${imports}
async function main () {
  const app = Fastify()
  await app.register(asyncRoute, { timeout: 5000 })
  app.get('/upstream', async () => 'from upstream')
  app.asyncRoute({
    method: 'GET',
    url: '/',
    handler (request, reply) {
      reply.fetch('http://127.0.0.1:' + app.server.address().port + '/upstream', (err, res) => {
        if (err) return reply.fail(err)
        res.body.text().then((text) => reply.finish({ format: '${format}', shape, text }))
      })
    }
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  process.stdout.write(url + '\\n')
  // Closes when the test ends stdin; the process must then exit on its own.
  process.stdin.on('end', () => app.close())
  process.stdin.resume()
}
main().catch((error) => { console.error(error); process.exitCode = 1 })
`
}

for (const [format, file] of [['esm', 'app.mjs'], ['cjs', 'app.cjs']] as const) {
  t.test(`${format === 'esm' ? 'import' : 'require'}: a consumer app answers over a real socket`, async (t) => {
    const dir = await consumer(format)
    await writeFile(path.join(dir, file), app(format))
    const child = spawn(process.execPath, [file], { cwd: dir, env: userEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const exited = once(child, 'exit')
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    t.teardown(() => { clearTimeout(killer); child.kill('SIGKILL') })

    const lines = createInterface({ input: child.stdout })
    const [url] = await Promise.race([once(lines, 'line'), exited.then(() => { throw new Error(`the app exited: ${stderr}`) })]) as [string]
    const res = await fetch(`${url}/`)
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /^application\/json/)
    const expected = format === 'esm'
      ? { named: true, default: true }
      : { plugin: 'function', named: true, default: true }
    t.strictSame(await res.json(), { format, shape: expected, text: 'from upstream' })

    child.stdin.end()
    const [code] = await exited
    t.equal(code, 0, 'app.close() lets the process exit: nothing of the plugin keeps it alive')
    t.equal(stderr, '', 'no warnings')
  })
}

// What a TypeScript user writes; the expected errors prove the types are real, not `any`.
const ESM_CONSUMER = `import Fastify from 'fastify'
import asyncRoute, { asyncRoute as named, type AsyncReply, type UpstreamResponse } from 'fastify-async-route'

const app = Fastify()
await app.register(named, { timeout: 1000, allowedOrigins: ['http://127.0.0.1:8080'] })
await app.register(asyncRoute)
app.asyncRoute<{ Params: { id: string } }>({
  method: 'GET',
  url: '/:id',
  upstream: (request) => 'http://127.0.0.1:8080/items/' + request.params.id,
  handler (request, reply, res) {
    const upstream: UpstreamResponse = res
    const self: AsyncReply<typeof request> = reply
    self.finish({ id: request.params.id, status: upstream.statusCode })
  }
})
app.asyncRoute({
  method: 'GET',
  url: '/',
  handler (_request, reply) {
    reply.fetch('http://127.0.0.1:8080/', (err, res) => {
      if (err) return reply.fail(err)
      void res.body.dump().then(() => reply.finish(Object.keys(res.headers)))
    })
  }
})
// @ts-expect-error the params are typed: there is no "name"
app.asyncRoute<{ Params: { id: string } }>({ method: 'GET', url: '/x/:id', handler (request, reply) { reply.finish(request.params.name) } })
// @ts-expect-error the plugin options are typed
await app.register(asyncRoute, { timeout: 'soon' })
// @ts-expect-error write takes text or bytes
app.asyncRoute({ method: 'GET', url: '/y', handler (_request, reply) { reply.write({ id: 1 }) } })
export const stats: { started: number } = app.asyncRoute.stats()
`

const CJS_CONSUMER = `import Fastify = require('fastify')
import asyncRoute = require('fastify-async-route')

const app = Fastify()
const plugin: typeof asyncRoute = asyncRoute.default
const same: typeof asyncRoute = asyncRoute.asyncRoute
app.register(plugin, { timeout: 1000 }).register(same).after(() => {
  app.asyncRoute<{ Querystring: { q: string } }>({
    method: 'GET',
    url: '/',
    upstream: 'http://127.0.0.1:8080/',
    handler (request, reply, res) {
      reply.finish({ q: request.query.q, status: res.statusCode })
    }
  })
  // @ts-expect-error the querystring is typed
  app.asyncRoute<{ Querystring: { q: string } }>({ method: 'GET', url: '/n', handler (request, reply) { reply.finish(request.query.q.toFixed()) } })
})
// @ts-expect-error the plugin options are typed
app.register(asyncRoute, { closeGrace: 'later' })
const timedOut: { code: string, statusCode?: number } = new asyncRoute.TimeoutError(1000)
void timedOut
export = app
`

const TSCONFIG = {
  node16: { module: 'node16', moduleResolution: 'node16' },
  nodenext: { module: 'nodenext', moduleResolution: 'nodenext' },
  bundler: { module: 'esnext', moduleResolution: 'bundler' }
} as const

t.test('TypeScript consumers type-check under node16, nodenext and bundler resolution', async (t) => {
  const dir = await consumer('typescript', ['@types/node'])
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  await writeFile(path.join(dir, 'esm.mts'), ESM_CONSUMER)
  await writeFile(path.join(dir, 'cjs.cts'), CJS_CONSUMER)
  await writeFile(path.join(dir, 'bundled.ts'), ESM_CONSUMER)
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  await Promise.all(Object.entries(TSCONFIG).map(async ([mode, options]) => {
    const config = path.join(dir, `tsconfig.${mode}.json`)
    await writeFile(config, JSON.stringify({
      compilerOptions: {
        ...options,
        target: 'ES2022',
        strict: true,
        noEmit: true,
        // Our own declarations are checked too; the dependencies' are theirs.
        skipLibCheck: false,
        types: ['node']
      },
      // The bundler mode has no CommonJS `.cts` semantics to check.
      files: mode === 'bundler' ? ['bundled.ts'] : ['esm.mts', 'cjs.cts']
    }))
    const result = await run(process.execPath, [tsc, '-p', config], { cwd: dir, env: userEnv() }).then(
      () => '',
      (error: { stdout?: string, message: string }) => error.stdout ?? error.message
    )
    t.equal(result, '', `tsc under ${mode}: no errors, and every expected error occurs`)
  }))
})
