// CommonJS entry: `require('fastify-async-route')` returns the plugin function itself, with
// `default` and `asyncRoute` properties, as Fastify's own plugins do.
//
// A plain require() of the ESM build (Node >= 20.19 loads it without a flag) and a type-only
// import: `import esm = require('./index.js')` would emit declarations that TypeScript's
// node16 mode rejects (TS1471: it does not allow require() of an ES module).
import type { AsyncRoutePlugin } from './index.js' with { 'resolution-mode': 'import' }
import type * as entry from './index.js' with { 'resolution-mode': 'import' }

type NamedExports = Omit<typeof entry, 'default' | 'asyncRoute'>

/** The plugin, whose properties are the ES module's named exports (index.ts sets them). */
interface CommonJsEntry extends AsyncRoutePlugin, NamedExports {
  default: CommonJsEntry
  asyncRoute: CommonJsEntry
}

const plugin: CommonJsEntry = require('./index.js').default

export = plugin
