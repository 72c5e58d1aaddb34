// OpenTelemetry for the observability example: the AsyncLocalStorage context manager, W3C
// `traceparent` propagation, spans for incoming requests (instrumentation-http) and upstream
// requests (instrumentation-undici, which sees the plugin's undici through its diagnostics
// channels). No collector needed: finished spans are kept in memory (the last 500) for
// `GET /traces`, or printed with OTEL_TRACES_CONSOLE=1. Put an OTLP exporter here in production.
//
// Import this module before anything that loads Fastify: instrumentation-http patches
// `node:http` only when it is required after registration.
import { context, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { ExportResultCode, W3CTraceContextPropagator, hrTimeToMilliseconds, type ExportResult } from '@opentelemetry/core'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { ConsoleSpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace'

/** A span as `GET /traces` shows it. */
export interface SpanSummary {
  name: string
  kind: number
  traceId: string
  spanId: string
  parentSpanId: string | null
  durationMs: number
  attributes: ReadableSpan['attributes']
}

/** Keeps the last `size` finished spans. */
class RecentSpans implements SpanExporter {
  readonly spans: SpanSummary[] = []
  constructor (readonly size: number) {}

  export (spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    for (const span of spans) {
      this.spans.push({
        name: span.name,
        kind: span.kind,
        traceId: span.spanContext().traceId,
        spanId: span.spanContext().spanId,
        parentSpanId: span.parentSpanContext?.spanId ?? null,
        durationMs: hrTimeToMilliseconds(span.duration),
        attributes: span.attributes
      })
    }
    this.spans.splice(0, Math.max(0, this.spans.length - this.size))
    done({ code: ExportResultCode.SUCCESS })
  }

  async shutdown (): Promise<void> {}
}

export const recentSpans = new RecentSpans(500)
const exporter = process.env.OTEL_TRACES_CONSOLE === '1' ? new ConsoleSpanExporter() : recentSpans
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
propagation.setGlobalPropagator(new W3CTraceContextPropagator())
trace.setGlobalTracerProvider(provider)
registerInstrumentations({ instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation()] })

/** The active span's ids, for log lines (a pino `mixin`): `{}` outside any span. */
export function traceIds (): { traceId?: string, spanId?: string } {
  const span = trace.getActiveSpan()
  if (span === undefined) return {}
  const { traceId, spanId } = span.spanContext()
  return { traceId, spanId }
}

export async function shutdownTracing (): Promise<void> {
  await provider.shutdown()
}
