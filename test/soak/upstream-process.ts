// The soak upstream's process (see upstreams.ts): serves until the soak stops it, or leaves
// with it.
import { serveSoakUpstream, type UpstreamMessage } from './upstreams.js'

const send = (message: UpstreamMessage): void => { process.send?.(message) }
process.on('disconnect', () => process.exit(0))
send({ origin: await serveSoakUpstream((accepted, open) => send({ accepted, open })) })
