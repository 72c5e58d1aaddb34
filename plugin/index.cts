// CommonJS entry: `require('fastify-async-route')` returns the plugin function itself, with
// `default` and `asyncRoute` properties, as Fastify's own plugins do.
//
// A plain require() of the ESM build (Node >= 20.19 loads it without a flag) and a type-only
// import: `import esm = require('./index.js')` would emit declarations that TypeScript's
// node16 mode rejects (TS1471: it does not allow require() of an ES module).
import type { AsyncRoutePlugin } from './index.js' with { 'resolution-mode': 'import' }

const plugin: AsyncRoutePlugin = require('./index.js').default

export = plugin
