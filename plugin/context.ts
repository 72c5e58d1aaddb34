// The state shared by every reply of one plugin registration and of one route. Built once, at
// `register` and at `asyncRoute()`, so that the per-request path only reads it.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { Registry } from './registry.js'
import type { WatchdogQueue } from './watchdog-queue.js'
import type { ResolvedRetry } from './retry-policy.js'
import type { CompressPolicy } from './compression.js'
import type { AsyncReply, HangReport, RenderError, UpstreamRequest } from './types.js'

export interface PluginContext {
  readonly dispatcher: Dispatcher
  readonly timeout: number
  readonly onTimeout: WatchdogHook | null
  /** ms; `0`: off. */
  readonly warnUnfinished: number
  /** ms, the default of every route; `0`: off. */
  readonly idleTimeout: number
  /** Lower-cased header name, or `null` when deadlines do not travel. */
  readonly deadlineHeader: string | null
  /** Open replies of this registration at most; `0`: no limit. */
  readonly maxPending: number
  /** `null` when any origin may be reached. */
  readonly allowedOrigins: ReadonlySet<string> | null
  /** The plugin's retry policy (`attempts: 1`: none). */
  readonly retry: ResolvedRetry
  /** `null`: answers go out as they are. */
  readonly compress: CompressPolicy | null
  /** `null`: error answers in Fastify's default shape. */
  readonly renderError: RenderError | null
  readonly registry: Registry
}

export type WatchdogHook = (request: FastifyRequest, reply: AsyncReply, report: HangReport) => void

export type UpstreamTarget = string | URL | UpstreamRequest

export type UserFunction = (this: FastifyInstance, ...args: any[]) => unknown

export interface RouteContext {
  readonly plugin: PluginContext
  readonly instance: FastifyInstance
  readonly handler: UserFunction
  readonly timeout: number
  /** The replies armed with `timeout` wait here (one timer for the route); `null` when it is 0. */
  readonly watchdogs: WatchdogQueue | null
  /** The route's `onWatchdog`, else the plugin's `onTimeout`. */
  readonly onWatchdog: WatchdogHook | null
  /** ms; `0`: off. */
  readonly warnUnfinished: number
  /** ms; `0`: off. */
  readonly idleTimeout: number
  /** Open replies of this route at most; `0`: no limit (then `open` is not kept). */
  readonly maxPending: number
  /** This route's open replies, kept only when `maxPending` is set. */
  open: number
  /** The plugin's retry policy with the route's laid over it. */
  readonly retry: ResolvedRetry
  /** The plugin's `compress`, or the route's own; `null`: off. */
  readonly compress: CompressPolicy | null
  /** The route's `renderError`, else the plugin's. */
  readonly renderError: RenderError | null
  /** `null` when the route has no `upstream` step. */
  readonly upstream: UpstreamTarget | ((request: FastifyRequest) => UpstreamTarget | Promise<UpstreamTarget>) | null
  readonly onUpstreamError: UserFunction | null
  /** The handler returned a value while its reply was open: warned once for the route. */
  warnedReturn: boolean
}
