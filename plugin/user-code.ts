// What the plugin assumes of values the app's own functions return.

/** A thenable: what an async handler, hook or callback returns. */
export function isPromise (value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}
