// Plugin options are checked at register(), with a message naming the option; and the built
// package loads through every import form.
import { createRequire } from 'node:module'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import t, { type Test } from 'tap'
import asyncRouteFromPackage, { asyncRoute as namedFromPackage } from 'fastify-async-route'
import asyncRoute, { type AsyncRoutePluginOptions } from '../plugin/index.js'
import { request } from './helpers/client.js'

/** Registers the plugin on a fresh app and resolves with the error register() rejected with. */
async function registerError (t: Test, options: unknown): Promise<Error | undefined> {
  const app = Fastify()
  t.teardown(() => app.close())
  try {
    await app.register(asyncRoute, options as AsyncRoutePluginOptions)
    await app.ready()
  } catch (error) {
    return error as Error
  }
  return undefined
}

async function rejects (t: Test, options: unknown, name: string): Promise<void> {
  const shown = JSON.stringify(options, (key, value: unknown) => typeof value === 'function' ? '[function]' : value)
  const error = await registerError(t, options)
  if (error === undefined) {
    t.fail(`register accepted ${shown}`)
    return
  }
  t.equal(error.name, 'TypeError', `${shown}: a TypeError`)
  t.equal((error as { code?: string }).code, 'FST_ASYNC_ROUTE_INVALID_OPTION', `${shown}: with its code`)
  t.match(error.message, `"${name}"`, `${shown}: the message names ${name}`)
}

async function accepts (t: Test, options: unknown): Promise<void> {
  const error = await registerError(t, options)
  t.equal(error, undefined, `register accepts ${JSON.stringify(options)}${error === undefined ? '' : `: ${error.message}`}`)
}

t.test('durations must be integers from 0 to 2147483647', async (t) => {
  for (const name of ['timeout', 'closeGrace', 'warnUnfinished']) {
    for (const value of [-1, 1.5, 2_147_483_648, '100', Number.NaN, Infinity, null, true]) {
      await rejects(t, { [name]: value }, name)
    }
    await accepts(t, { [name]: 0 })
    await accepts(t, { [name]: 2_147_483_647 })
  }
  await accepts(t, { warnUnfinished: false })
  await accepts(t, { timeout: undefined, closeGrace: undefined, warnUnfinished: undefined })
  await accepts(t, {})
})

t.test('the message says what was expected and what was given', async (t) => {
  const error = await registerError(t, { timeout: '100' })
  t.match(error?.message, /^fastify-async-route: option "timeout" must be an integer from 0 to 2147483647 \(ms\), got "100"$/)
  const negative = await registerError(t, { closeGrace: -5 })
  t.match(negative?.message, /"closeGrace".*got -5/)
})

t.test('an unknown option is refused, naming it; the keys Fastify passes to every plugin are accepted', async (t) => {
  const error = await registerError(t, { timout: 100 })
  t.equal(error?.name, 'TypeError')
  t.equal((error as { code?: string } | undefined)?.code, 'FST_ASYNC_ROUTE_INVALID_OPTION')
  t.match(error?.message, /^fastify-async-route: unknown option "timout" \(the options are timeout, dispatcher, /)
  await rejects(t, { timeout: 100, Timeout: 100 }, 'Timeout')
  await rejects(t, { retries: 2 }, 'retries')

  // register(plugin, { prefix, logLevel, logSerializers }): Fastify hands them on to the plugin.
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute, { prefix: '/api', logLevel: 'warn', logSerializers: { req: () => 'request' }, timeout: 1000 })
  app.asyncRoute({ method: 'GET', url: '/ok', handler (_request, reply) { reply.finish('ok') } })
  t.equal((await app.inject('/ok')).body, 'ok', 'registered, and its routes work')
})

t.test('maxPending is a count: its message has no unit; string values are quoted at register and asyncRoute() alike', async (t) => {
  const count = await registerError(t, { maxPending: -1 })
  t.equal(count?.message, 'fastify-async-route: option "maxPending" must be an integer from 0 to 2147483647, got -1')
  const quoted = await registerError(t, { idleTimeout: '5' })
  t.equal(quoted?.message, 'fastify-async-route: option "idleTimeout" must be an integer from 0 to 2147483647 (ms), got "5"')

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute)
  const route = (options: Record<string, unknown>) => () => app.asyncRoute({ method: 'GET', url: '/', handler () {}, ...options })
  t.throws(route({ maxPending: -1 }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: 'asyncRoute(): "maxPending" must be an integer from 0 to 2147483647, got -1' })
  t.throws(route({ timeout: '100' }), { message: 'asyncRoute(): "timeout" must be an integer from 0 to 2147483647 (ms), got "100"' })
  t.throws(route({ idleTimeout: 'soon' }), { message: 'asyncRoute(): "idleTimeout" must be an integer from 0 to 2147483647 (ms), got "soon"' })
  t.throws(route({ warnUnfinished: -1 }), { message: 'asyncRoute(): "warnUnfinished" must be an integer from 0 to 2147483647 (ms), got -1' })
  // A value that cannot even be turned into text (parsed from a config file, say) is named by its type.
  t.throws(route({ timeout: Object.create(null) }), { code: 'FST_ASYNC_ROUTE_INVALID_OPTION', message: 'asyncRoute(): "timeout" must be an integer from 0 to 2147483647 (ms), got (object)' })
  t.throws(route({ retry: { statusCodes: [500, '502'] } }), { message: 'asyncRoute(): "retry.statusCodes" must be an array of integer status codes from 100 to 599, got [500, "502"]' })
})

t.test('a dispatcher must have a dispatch() method', async (t) => {
  await rejects(t, { dispatcher: {} }, 'dispatcher')
  await rejects(t, { dispatcher: { dispatch: 'not a function' } }, 'dispatcher')
  await rejects(t, { dispatcher: null }, 'dispatcher')
  await rejects(t, { dispatcher: 'http://127.0.0.1' }, 'dispatcher')
  await accepts(t, { dispatcher: { dispatch () { return true }, close: async () => {}, destroy: async () => {} } })
})

t.test('onTimeout must be a function', async (t) => {
  await rejects(t, { onTimeout: 'log it' }, 'onTimeout')
  await rejects(t, { onTimeout: {} }, 'onTimeout')
  await rejects(t, { onTimeout: null }, 'onTimeout')
  await accepts(t, { onTimeout () {} })
})

t.test('allowedOrigins must be an array of scheme://host[:port] origins', async (t) => {
  await rejects(t, { allowedOrigins: 'http://127.0.0.1:8080' }, 'allowedOrigins')
  await rejects(t, { allowedOrigins: { 0: 'http://a' } }, 'allowedOrigins')
  await rejects(t, { allowedOrigins: null }, 'allowedOrigins')
  const invalid = [
    42,
    null,
    'http://a/b',
    'http://a.example:8080/path/',
    'http://a//',
    'http://a?x=1',
    'http://a/?x=1',
    'http://a#top',
    'http:a/b',
    'http:a',
    'http://a\\b',
    'http:\\\\a',
    'http://user:pass@a',
    'http://user@a',
    'ftp://a',
    'file:///etc/passwd',
    'ws://a',
    'not an origin',
    '127.0.0.1:8080',
    ''
  ]
  for (const value of invalid) {
    await rejects(t, { allowedOrigins: ['http://fine.example', value] }, 'allowedOrigins[1]')
  }
  await accepts(t, { allowedOrigins: [] })
  await accepts(t, { allowedOrigins: ['http://a', 'https://b.example:8443', 'http://127.0.0.1:3000/', 'HTTP://UPPER.example'] })
})

t.test('the built package loads through import, named import and require', async (t) => {
  const required = createRequire(import.meta.url)('fastify-async-route') as typeof asyncRouteFromPackage
  t.type(asyncRouteFromPackage, 'function', 'default import')
  t.equal(namedFromPackage, asyncRouteFromPackage, 'the named import is the default one')
  t.type(required, 'function', 'require() returns the plugin function itself')
  t.equal(required.default, required, 'require(...).default')
  t.equal(required.asyncRoute, required, 'require(...).asyncRoute')
  t.equal(asyncRouteFromPackage.default, asyncRouteFromPackage)
  t.equal(asyncRouteFromPackage.asyncRoute, asyncRouteFromPackage)

  for (const [form, plugin] of [['default', asyncRouteFromPackage], ['named', namedFromPackage], ['require', required]] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(plugin, { timeout: 1000 })
    t.type(app.asyncRoute, 'function', `${form}: decorates app.asyncRoute`)
    app.asyncRoute({ method: 'GET', url: '/', handler (request, reply) { setTimeout(() => reply.finish(form), 5) } })
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    const res = await request(url)
    t.equal(res.statusCode, 200, form)
    t.equal(res.body, form)
    t.equal(res.headers['content-type'], 'text/plain; charset=utf-8', form)
    await app.close()
  }
})

t.test('defaults: a 30 s watchdog and a 10 s close grace', async (t) => {
  const { resolveOptions } = await import('../plugin/options.js')
  t.match(resolveOptions({}), { timeout: 30_000, closeGrace: 10_000, warnUnfinished: 0, onTimeout: null, allowedOrigins: null })
})

t.test('registered through fastify-plugin as "fastify-async-route", so other plugins can depend on it', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(asyncRoute)
  await app.register(fp(async (instance) => {
    t.equal(typeof instance.asyncRoute, 'function', 'visible to a plugin registered after it')
  }, { name: 'needs-async-route', dependencies: ['fastify-async-route'] }))
  await app.ready()
  t.equal(typeof app.asyncRoute.stats, 'function', 'decorated on the registering scope')
})
