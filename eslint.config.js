// Lint and format: neostandard (standard style, with TypeScript rules).
import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'coverage/**', '.tap/**', '.cache/**']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (pipe() never rejects).
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
