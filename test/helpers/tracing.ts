// OpenTelemetry as an application sets it up — the AsyncLocalStorage context manager, W3C
// propagation, the http and undici instrumentations — with spans kept in memory. Import it
// before anything that loads Fastify: `instrumentation-http` patches `node:http` only when it
// is required after registration.
import { context, propagation, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace'

export const exporter = new InMemorySpanExporter()
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
propagation.setGlobalPropagator(new W3CTraceContextPropagator())
trace.setGlobalTracerProvider(provider)
registerInstrumentations({ instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation()] })

/** The trace and span ids of the span active now (`-` when there is none). */
export function activeSpanIds (): { traceId: string, spanId: string } {
  const span = trace.getActiveSpan()
  if (span === undefined) return { traceId: '-', spanId: '-' }
  const { traceId, spanId } = span.spanContext()
  return { traceId, spanId }
}

/** The client spans undici's instrumentation ended so far (one per request sent upstream). */
export function upstreamSpans (): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) =>
    span.kind === SpanKind.CLIENT && span.instrumentationScope.name === '@opentelemetry/instrumentation-undici')
}

/** `traceparent`'s trace id and parent span id. */
export function parseTraceparent (value: unknown): { traceId: string, spanId: string } {
  const [, traceId = '', spanId = ''] = String(value).split('-')
  return { traceId, spanId }
}
