// What both scale clients report once every held request was answered (or given up on): the
// statuses, and how late each answer came after its send time + the watchdog's timeout.

export interface HeldRequest {
  sentAt: number
  arrivedAt: number
  /** The status, '' if none came, 'error' if the stream failed. */
  status: string
}

export interface AnswersReport {
  statuses: Record<string, number>
  maxLateMs: number
  p50LateMs: number
  minLateMs: number
}

export function summariseAnswers (held: readonly HeldRequest[], timeout: number): AnswersReport {
  const statuses: Record<string, number> = {}
  const late: number[] = []
  for (const entry of held) {
    const status = entry.status === '' ? 'none' : entry.status
    statuses[status] = (statuses[status] ?? 0) + 1
    if (entry.status !== '' && entry.status !== 'error') late.push(entry.arrivedAt - entry.sentAt - timeout)
  }
  late.sort((a, b) => a - b)
  return {
    statuses,
    maxLateMs: Math.round(late[late.length - 1] ?? NaN),
    p50LateMs: Math.round(late[late.length >> 1] ?? NaN),
    minLateMs: Math.round(late[0] ?? NaN)
  }
}
