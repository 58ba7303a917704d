import {
  context as otelContext,
  SpanStatusCode,
  trace,
  type Context,
  type Span,
  type SpanOptions,
  type Tracer,
} from "@opentelemetry/api";

/** The tracer every PoseLoop package uses, named by the package. */
export function getTracer(name: string, version?: string): Tracer {
  return trace.getTracer(name, version);
}

/**
 * Runs `fn` inside a new active span and ends the span when it settles. A thrown error is recorded on the span
 * (exception event, ERROR status) and rethrown.
 */
export async function withSpan<T>(
  tracer: Tracer,
  name: string,
  options: SpanOptions & { parent?: Context },
  fn: (span: Span) => Promise<T> | T,
): Promise<T> {
  const { parent, ...spanOptions } = options;
  const ctx = parent ?? otelContext.active();
  return tracer.startActiveSpan(name, spanOptions, ctx, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      recordError(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** Marks a span failed with `error`. */
export function recordError(span: Span, error: unknown): void {
  if (error instanceof Error) {
    span.recordException(error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
  } else {
    span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
  }
}

/** The W3C trace id of the span active in `ctx`, or "" when there is none. */
export function traceIdOf(ctx: Context = otelContext.active()): string {
  const spanContext = trace.getSpanContext(ctx);
  return spanContext !== undefined && trace.isSpanContextValid(spanContext) ? spanContext.traceId : "";
}
