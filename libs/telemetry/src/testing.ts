import { context as otelContext, metrics, propagation, trace, type Attributes, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { DataPointType, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
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

/** One data point of a collected metric: its attributes and its value (a histogram's count and sum). */
export interface TestMetricPoint {
  readonly attributes: Attributes;
  readonly value: number;
  /** Histograms only. */
  readonly count?: number;
}

/** A MeterProvider read on demand, installed globally for the current process. */
export interface TestMetrics {
  /** The points of the metric with this instrument name, as of now (cumulative). */
  points(name: string): Promise<TestMetricPoint[]>;
  shutdown(): Promise<void>;
}

/** Reads when asked: what a scrape does, without a server. */
class OnDemandReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/**
 * Installs a MeterProvider with an on-demand reader as the process's global, so that instruments created from
 * `metrics.getMeter` afterwards record into it (create the code under test after this).
 */
export function installTestMetrics(): TestMetrics {
  const reader = new OnDemandReader();
  const provider = new MeterProvider({ readers: [reader] });
  metrics.disable();
  metrics.setGlobalMeterProvider(provider);
  return {
    points: async (name) => {
      const { resourceMetrics } = await reader.collect();
      return resourceMetrics.scopeMetrics.flatMap((scope) =>
        scope.metrics
          .filter((metric) => metric.descriptor.name === name)
          .flatMap((metric) =>
            metric.dataPoints.map((point): TestMetricPoint => {
              if (metric.dataPointType === DataPointType.HISTOGRAM || metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) {
                const histogram = point.value as { count: number; sum?: number };
                return { attributes: point.attributes, value: histogram.sum ?? 0, count: histogram.count };
              }
              return { attributes: point.attributes, value: point.value as number };
            }),
          ),
      );
    },
    shutdown: async () => {
      await provider.shutdown();
      metrics.disable();
    },
  };
}
