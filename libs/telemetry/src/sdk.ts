import { propagation, type TextMapPropagator } from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter as OtlpGrpcTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as OtlpJsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as OtlpProtoTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { Logger } from "@poseloop/core";
import type { TelemetryConfig } from "./config.js";

/** The running OpenTelemetry SDK of a service process. */
export interface Telemetry {
  readonly config: TelemetryConfig;
  /** Flushes pending spans and stops exporting. Safe to call twice. */
  shutdown(): Promise<void>;
}

/** W3C trace context and baggage, the propagation every PoseLoop process uses. */
export function createW3CPropagator(): TextMapPropagator {
  return new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  });
}

/**
 * Starts the OpenTelemetry Node SDK for a service: resource (service name and version), sampler, W3C
 * propagation, and the exporter chosen by the config. Extra span processors (e.g. a console summary) can be
 * added. Without an exporter the propagator is still installed, so trace context keeps flowing through the
 * process to the next hop.
 */
export function startTelemetry(
  config: TelemetryConfig,
  options: { logger?: Logger; extraSpanProcessors?: readonly SpanProcessor[] } = {},
): Telemetry {
  const propagator = createW3CPropagator();
  if (!config.enabled) {
    propagation.setGlobalPropagator(propagator);
    return { config, shutdown: async () => undefined };
  }
  const processors: SpanProcessor[] = [...(options.extraSpanProcessors ?? [])];
  if (config.exporter === "otlp") {
    const exporter =
      config.otlpProtocol === "grpc"
        ? new OtlpGrpcTraceExporter({ url: config.otlpEndpoint })
        : config.otlpProtocol === "http/json"
          ? new OtlpJsonTraceExporter({ url: config.otlpEndpoint })
          : new OtlpProtoTraceExporter({ url: config.otlpEndpoint });
    processors.push(new BatchSpanProcessor(exporter));
  } else if (config.exporter === "console") {
    processors.push(new SimpleSpanProcessor(new ConsoleSpanExporter()));
  }
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: config.serviceName,
      [ATTR_SERVICE_VERSION]: config.serviceVersion,
    }),
    autoDetectResources: false,
    spanProcessors: processors,
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    textMapPropagator: propagator,
    instrumentations: [],
  });
  sdk.start();
  options.logger?.info("telemetry started", {
    exporter: config.exporter,
    endpoint: config.exporter === "otlp" ? config.otlpEndpoint : undefined,
    sample_ratio: config.sampleRatio,
  });
  let stopped: Promise<void> | undefined;
  return {
    config,
    shutdown: () => {
      stopped ??= sdk.shutdown().catch((error: unknown) => {
        options.logger?.warn("telemetry shutdown failed", { err: error });
      });
      return stopped;
    },
  };
}
