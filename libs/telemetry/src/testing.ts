import { context as otelContext, propagation, trace, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from "@opentelemetry/sdk-trace-base";
import { createW3CPropagator } from "./sdk.js";

/** A tracer provider recording finished spans in memory, installed globally for the current process. */
export interface TestTelemetry {
  readonly exporter: InMemorySpanExporter;
  tracer(name?: string): Tracer;
  /** Finished spans so far, in the order they ended. */
  spans(): ReadableSpan[];
  /** Finished spans with this name. */
  spansNamed(name: string): ReadableSpan[];
  reset(): void;
  shutdown(): Promise<void>;
}

/**
 * Installs an in-memory tracer provider, the W3C propagator and an AsyncLocalStorage context manager as the
 * process's globals, so that code under test traces exactly as it does in a service.
 */
export function installTestTelemetry(serviceName = "test"): TestTelemetry {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  trace.disable();
  otelContext.disable();
  propagation.disable();
  otelContext.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(createW3CPropagator());
  return {
    exporter,
    tracer: (name = "test") => trace.getTracer(name),
    spans: () => exporter.getFinishedSpans(),
    spansNamed: (name) => exporter.getFinishedSpans().filter((span) => span.name === name),
    reset: () => exporter.reset(),
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      otelContext.disable();
      propagation.disable();
    },
  };
}
