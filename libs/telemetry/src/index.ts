export { OtlpProtocol, telemetryConfigFromEnv, TraceExporterKind } from "./config.js";
export type { TelemetryConfig, TelemetryConfigResult } from "./config.js";
export { createW3CPropagator, startTelemetry } from "./sdk.js";
export type { Telemetry } from "./sdk.js";
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
export { installTestTelemetry } from "./testing.js";
export type { TestTelemetry } from "./testing.js";
