export { metricsEndpointFromEnv, MetricsExporterKind, OtlpProtocol, telemetryConfigFromEnv, TraceExporterKind } from "./config.js";
export type { MetricsEndpoint, TelemetryConfig, TelemetryConfigResult } from "./config.js";
export { createW3CPropagator, startTelemetry } from "./sdk.js";
export type { MetricsAddress, StartTelemetryOptions, Telemetry } from "./sdk.js";
export {
  extractFromHeaders,
  extractFromMetadata,
  injectIntoHeaders,
  injectIntoMetadata,
  linkTo,
  traceContextFromRecord,
  traceContextToRecord,
} from "./propagation.js";
export type { HeadersCarrier, MetadataCarrier } from "./propagation.js";
export { getTracer, recordError, traceIdOf, withSpan } from "./spans.js";
export { installTestMetrics, installTestTelemetry } from "./testing.js";
export type { TestMetricPoint, TestMetrics, TestTelemetry } from "./testing.js";
