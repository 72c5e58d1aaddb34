// The undici dispatcher kinds a user may pass as the plugin's `dispatcher`, for this Node line:
// undici 7's always, undici 8's (the `undici8` alias) only on Node >= 22.19, imported
// dynamically so that older lines never load it. Each kind builds a fresh dispatcher for one
// upstream origin and can tell whether requests really went through it.
import type { Dispatcher } from 'undici'
import * as undici7 from 'undici'
import { startConnectProxy } from './proxy.js'

/** How a kind changes the upstream's answers, as undici documents its interceptors. */
export type Effect = 'none' | 'redirect' | 'decompress' | 'dump' | 'retry' | 'cache'

export interface BuiltDispatcher {
  /** What the plugin gets as `dispatcher`; undefined for the plugin's own agent. */
  dispatcher: Dispatcher | undefined
  /** The origin requests are addressed to (the dns kind uses a name only its lookup knows). */
  origin: string
  /** How many times it connected (for ProxyAgent: CONNECTs the proxy accepted); null when unknowable. */
  used: (() => number) | null
  close: () => Promise<void>
}

export interface DispatcherKind {
  name: string
  /** The undici major the dispatcher comes from; null for the plugin's own agent. */
  undici: 7 | 8 | null
  effect: Effect
  build: (upstreamOrigin: string) => Promise<BuiltDispatcher>
}

/** undici 8 has the same constructors and interceptors as undici 7 for what is used here. */
type Undici = typeof undici7

/** A host name that no resolver knows (RFC 6761 `.invalid`): only the dns kind's lookup does. */
const FAKE_HOST = 'upstream.dispatchers.invalid'

export function undici8Supported (version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number)
  return major > 22 || (major === 22 && minor >= 19)
}

/** A connector that counts its connections, for kinds built on Agent, Pool or Client. */
function countingConnect (undici: Undici): { connect: undici7.buildConnector.connector, count: () => number } {
  const inner = undici.buildConnector({})
  let count = 0
  const connect: undici7.buildConnector.connector = (options, callback) => {
    count++
    inner(options, callback)
  }
  return { connect, count: () => count }
}

function kindsOf (undici: Undici, major: 7 | 8): DispatcherKind[] {
  const { Agent, Client, Pool, ProxyAgent, RetryAgent, interceptors } = undici
  const retryOptions = { minTimeout: 10, maxTimeout: 50 }
  const plain = (origin: string, dispatcher: Dispatcher, count: () => number): BuiltDispatcher => ({
    dispatcher, origin, used: count, close: () => dispatcher.destroy()
  })
  const composed = (name: string, effect: Effect, interceptor: () => Dispatcher.DispatcherComposeInterceptor): DispatcherKind => ({
    name: `Agent.compose(${name})`,
    undici: major,
    effect,
    build: async (origin) => {
      const { connect, count } = countingConnect(undici)
      return plain(origin, new Agent({ connect }).compose(interceptor()), count)
    }
  })
  const kinds: DispatcherKind[] = [
    {
      name: 'Agent',
      undici: major,
      effect: 'none',
      build: async (origin) => {
        const { connect, count } = countingConnect(undici)
        return plain(origin, new Agent({ connect }), count)
      }
    },
    {
      name: 'Pool',
      undici: major,
      effect: 'none',
      build: async (origin) => {
        const { connect, count } = countingConnect(undici)
        return plain(origin, new Pool(origin, { connect }), count)
      }
    },
    {
      name: 'Client',
      undici: major,
      effect: 'none',
      build: async (origin) => {
        const { connect, count } = countingConnect(undici)
        return plain(origin, new Client(origin, { connect }), count)
      }
    },
    {
      name: 'ProxyAgent',
      undici: major,
      effect: 'none',
      build: async (origin) => {
        const proxy = await startConnectProxy()
        // (proxyTunnel is undici's default: http targets go through CONNECT too.)
        const dispatcher = new ProxyAgent({ uri: proxy.url, proxyTunnel: true })
        return {
          dispatcher,
          origin,
          used: proxy.connects,
          close: async () => {
            await dispatcher.destroy()
            await proxy.close()
          }
        }
      }
    },
    {
      name: 'RetryAgent',
      undici: major,
      effect: 'retry',
      build: async (origin) => {
        const { connect, count } = countingConnect(undici)
        return plain(origin, new RetryAgent(new Agent({ connect }), retryOptions), count)
      }
    },
    {
      name: 'Agent.compose(dns)',
      undici: major,
      effect: 'none',
      build: async (origin) => {
        const { connect, count } = countingConnect(undici)
        const dispatcher = new Agent({ connect }).compose(interceptors.dns({
          dualStack: false,
          affinity: 4,
          // Only this lookup knows the fake name: an answer proves the interceptor ran.
          lookup: (_origin, _options, callback) => callback(null, [{ address: '127.0.0.1', family: 4, ttl: 60_000 }])
        }))
        const url = new URL(origin)
        url.hostname = FAKE_HOST
        return plain(url.origin, dispatcher, count)
      }
    },
    composed('retry', 'retry', () => interceptors.retry(retryOptions)),
    composed('redirect', 'redirect', () => interceptors.redirect({ maxRedirections: 3 })),
    composed('decompress', 'decompress', () => interceptors.decompress()),
    composed('cache', 'cache', () => interceptors.cache()),
    composed('dump', 'dump', () => interceptors.dump())
  ]
  return kinds.map((kind) => ({ ...kind, name: `undici ${major} ${kind.name}` }))
}

/** The plugin's own agent: the reference every other kind must match. */
const ownAgent: DispatcherKind = {
  name: "the plugin's own Agent",
  undici: null,
  effect: 'none',
  build: async (origin) => ({ dispatcher: undefined, origin, used: null, close: async () => {} })
}

/** Every dispatcher kind this Node line can run, the plugin's own agent first. */
export async function dispatcherKinds (): Promise<DispatcherKind[]> {
  const kinds = [ownAgent, ...kindsOf(undici7, 7)]
  if (undici8Supported()) {
    const undici8 = (await import('undici8')) as unknown as Undici
    kinds.push(...kindsOf(undici8, 8))
  }
  return kinds
}
