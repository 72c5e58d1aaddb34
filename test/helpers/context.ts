// The test context types the helpers and test files share.
export type { Test } from 'tap'

/** What the helpers need of a test: a cleanup hook run when it ends (any tap Test fits). */
export interface Teardown {
  teardown: (fn: () => unknown) => void
}
