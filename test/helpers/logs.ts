// Log capture for the tests: pino writes one JSON line per record into a stream of ours, and the
// tests read the records back, kept in an array or counted as they come.
import { Writable } from 'node:stream'

export interface LogLine {
  level: number
  msg: string
  reqId?: string
  [key: string]: unknown
}

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const

/** A stream for pino's `logger.stream`: every line written to it is parsed and handed to `onLine`. */
export function logStream (onLine: (line: LogLine) => void): Writable {
  return new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) {
        if (line !== '') onLine(JSON.parse(line) as LogLine)
      }
      callback()
    }
  })
}

/** Logger options at `level` whose lines end up in `logs`. */
export function captureLogs (level = 'debug'): { logs: LogLine[], logger: { level: string, stream: Writable } } {
  const logs: LogLine[] = []
  return { logs, logger: { level, stream: logStream((line) => { logs.push(line) }) } }
}

/** Log lines at exactly this level whose message includes `text`. */
export function logsAt (logs: LogLine[], level: number, text = ''): LogLine[] {
  return logs.filter((line) => line.level === level && String(line.msg).includes(text))
}
