// What the benchmark measures: each target (one way of answering a request), its reference
// (the figure it is compared with in the same round), its goal, and the scenarios (bodies).

export interface TargetInfo {
  /** Shown in the tables. */
  label: string
  /** Short name of the reference, shown as "0.79 × ceiling". */
  short: string
  /** The target this one is paired with in every round; none for a reference itself. */
  reference?: string
  /** Efficiency vs the reference to reach (CPU per request: reference ÷ target). */
  goal?: number
  /** A second goal against another target measured in the same round, shown in the notes. */
  also?: { reference: string, goal: number }
  /**
   * The same answer from a bare Fastify route that hijacks (no plugin), measured in the same
   * round: the notes show the target against it, which is what the plugin itself adds.
   */
  floor?: string
  /** Uses the plugin, so `--baseline=DIR` measures it also with the sources in DIR. */
  plugin: boolean
  /** Needs undici 8 (Node ≥ 22.19 for the server, see `--node=PATH`); only with `--undici8` or `--only`. */
  undici8?: boolean
}

export const TARGETS = {
  ceiling: { label: '`node:http` + undici `Pool.stream()` (ceiling)', short: 'ceiling', plugin: false },
  'pipe-url': { label: 'asyncRoute, `reply.pipe(url)`', short: 'pipe(url)', reference: 'ceiling', goal: 0.9, also: { reference: 'reply-from', goal: 1.3 }, floor: 'hijack-stream', plugin: true },
  'hijack-stream': { label: 'Fastify route, `reply.hijack()` + the ceiling\'s `Pool.stream()`', short: 'hijack + stream', reference: 'ceiling', plugin: false },
  'forward-get': { label: 'asyncRoute, `reply.forward(url)`, GET', short: 'forward (GET)', reference: 'reply-from', goal: 1.3, floor: 'hijack-stream', plugin: true },
  'reply-from': { label: '`@fastify/reply-from`', short: 'reply-from', reference: 'ceiling', plugin: false },
  'fetch-pipe': { label: 'asyncRoute, `reply.fetch` + `reply.pipe(res)`', short: 'fetch + pipe', reference: 'reply-from', goal: 1.0, floor: 'hijack-stream', plugin: true },
  'upstream-pipe': { label: 'asyncRoute, `upstream` option + `reply.pipe(res)`', short: 'upstream + pipe', reference: 'reply-from', plugin: true },
  'undici-send': { label: 'Fastify route, `undici.request` + `reply.send(body)`', short: 'undici + send', reference: 'reply-from', plugin: false },
  'ceiling-undici8': { label: '`node:http` + undici 8 `Pool.stream()` (ceiling, undici 8)', short: 'ceiling (undici 8)', reference: 'ceiling', plugin: false, undici8: true },
  'pipe-url-undici8': { label: 'asyncRoute, `reply.pipe(url)`, undici 8 `Agent`', short: 'pipe(url), undici 8', reference: 'ceiling-undici8', goal: 0.95, plugin: true, undici8: true },
  'reply-from-post': { label: '`@fastify/reply-from`, POST with a streamed body', short: 'reply-from (POST)', plugin: false },
  'forward-post': { label: 'asyncRoute, `reply.forward(url)`, POST with a streamed body', short: 'forward', reference: 'reply-from-post', goal: 1.2, plugin: true },
  'plain-json': { label: 'plain Fastify route returning `{hello:\'world\'}`', short: 'plain Fastify', plugin: false },
  'hijack-json': { label: 'Fastify route, `reply.hijack()` + `raw.end(JSON)`', short: 'hijack + end', reference: 'plain-json', plugin: false },
  'finish-json': { label: 'asyncRoute, `reply.finish({hello:\'world\'})`', short: 'finish(json)', reference: 'plain-json', goal: 1.0, floor: 'hijack-json', plugin: true }
} as const satisfies Record<string, TargetInfo>

export type Target = keyof typeof TARGETS

export function isTarget (name: string): name is Target {
  return Object.hasOwn(TARGETS, name)
}

export function info (target: Target): TargetInfo {
  return TARGETS[target]
}

/** A target as run: `pipe-url`, or `pipe-url@base` (the plugin sources from `--baseline=DIR`). */
export interface Variant { name: string, target: Target, base: boolean }

export function variant (name: string): Variant {
  const [target, suffix] = name.split('@')
  if (target === undefined || !isTarget(target) || (suffix !== undefined && suffix !== 'base')) throw new Error(`unknown target ${name}`)
  return { name, target, base: suffix === 'base' }
}

/** The reference a variant is paired with: `pipe-url@base` is compared with `ceiling` too. */
export function referenceOf (name: string): Target | undefined {
  const reference = info(variant(name).target).reference
  return reference === undefined ? undefined : variant(reference).target
}

/** The bare hijacking route a variant's answer is also compared with, if any (`pipe-url` vs `hijack-stream`). */
export function floorOf (name: string): Target | undefined {
  const floor = info(variant(name).target).floor
  return floor === undefined ? undefined : variant(floor).target
}

/** The second comparison of a variant, if its target has one (`pipe-url` vs `reply-from`). */
export function alsoOf (name: string): { reference: Target, goal: number } | undefined {
  const also = info(variant(name).target).also
  return also === undefined ? undefined : { reference: variant(also.reference).target, goal: also.goal }
}

export interface Scenario {
  /** For `--bodies=`. */
  name: 'small' | 'large' | 'json' | 'post1k' | 'post1m'
  path: '/small' | '/large' | '/json' | '/echo-size/1k' | '/echo-size/1m'
  label: string
  /** A POST with a body of this many bytes (`application/octet-stream`); a GET without. */
  post?: number
  /** Targets in the order they run (reversed every other round); references next to their targets. */
  targets: readonly Target[]
}

const UPSTREAM_ORDER: readonly Target[] = ['ceiling', 'hijack-stream', 'pipe-url', 'forward-get', 'reply-from', 'fetch-pipe', 'upstream-pipe', 'undici-send', 'ceiling-undici8', 'pipe-url-undici8']

const POST_ORDER: readonly Target[] = ['reply-from-post', 'forward-post']

export const SCENARIOS: readonly Scenario[] = [
  { name: 'small', path: '/small', label: '104 B', targets: UPSTREAM_ORDER },
  { name: 'large', path: '/large', label: '64 KiB', targets: UPSTREAM_ORDER },
  { name: 'json', path: '/json', label: 'no upstream', targets: ['plain-json', 'hijack-json', 'finish-json'] },
  { name: 'post1k', path: '/echo-size/1k', label: 'POST 1 KiB', post: 1024, targets: POST_ORDER },
  { name: 'post1m', path: '/echo-size/1m', label: 'POST 1 MiB', post: 1024 * 1024, targets: POST_ORDER }
]
