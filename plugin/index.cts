// CommonJS entry: `require('fastify-async-route')` returns the plugin function itself, with
// `default` and `asyncRoute` properties, as Fastify's own plugins do.
import esm = require('./index.js')

export = esm.default
