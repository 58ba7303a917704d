import type { Env, EnvReader } from "@poseloop/core";

export const TraceExporterKind = {
  otlp: "otlp",
  console: "console",
  none: "none",
} as const;
export type TraceExporterKind = (typeof TraceExporterKind)[keyof typeof TraceExporterKind];

export const OtlpProtocol = {
  grpc: "grpc",
  httpProtobuf: "http/protobuf",
  httpJson: "http/json",
} as const;
export type OtlpProtocol = (typeof OtlpProtocol)[keyof typeof OtlpProtocol];

/**
 * Where metrics go besides /metrics: the OTEL_METRICS_EXPORTER values this SDK setup honours. Not `prometheus`:
 * the SDK's own endpoint binds every interface by default, and /metrics (POSELOOP_METRICS_PORT) is the
 * service's, on its listen host.
 */
export const MetricsExporterKind = {
  otlp: "otlp",
  console: "console",
} as const;
export type MetricsExporterKind = (typeof MetricsExporterKind)[keyof typeof MetricsExporterKind];

export interface TelemetryConfig {
  readonly enabled: boolean;
  readonly serviceName: string;
  readonly serviceVersion: string;
  readonly exporter: TraceExporterKind;
  readonly otlpProtocol: OtlpProtocol;
  /** The traces endpoint as the exporter will call it (…/v1/traces for http/protobuf). */
  readonly otlpEndpoint: string;
  /** Fraction of root traces sampled, in [0, 1]; children follow their parent. */
  readonly sampleRatio: number;
  /**
   * Metric exporters from OTEL_METRICS_EXPORTER (empty: none). The OTLP one reads its own settings (endpoint,
   * headers, compression, timeout, temporality) from the standard variables itself.
   */
  readonly metricsExporters: readonly MetricsExporterKind[];
  readonly otlpMetricsProtocol: OtlpProtocol;
  /** How often and how long the periodic metric readers export (OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT). */
  readonly metricExportIntervalMs: number;
  readonly metricExportTimeoutMs: number;
}

/** The Prometheus scrape endpoint of a service: `http://host:port/metrics`. */
export interface MetricsEndpoint {
  readonly host: string;
  /** 0: a free port, chosen when the service starts (see Telemetry.metricsAddress). */
  readonly port: number;
}

export interface TelemetryConfigResult {
  readonly config: TelemetryConfig;
  /** Variables that were ignored, and why: telemetry never stops a service from starting. */
  readonly warnings: readonly string[];
}

/**
 * Reads the standard OpenTelemetry variables (OTEL_SDK_DISABLED, OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER,
 * OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, OTEL_TRACES_SAMPLER[_ARG]).
 * Invalid values produce a warning and the default, as the OpenTelemetry specification asks.
 * Without OTEL_TRACES_EXPORTER, traces go to OTLP when an endpoint is set and nowhere otherwise, so that a
 * service without a collector does not log export failures. Metrics follow OTEL_METRICS_EXPORTER (otlp, console,
 * none; prometheus is POSELOOP_METRICS_PORT here) and OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL, OTEL_METRIC_EXPORT_INTERVAL and
 * OTEL_METRIC_EXPORT_TIMEOUT, by the same rule: without OTEL_METRICS_EXPORTER, OTLP when an OTLP endpoint is set.
 */
export function telemetryConfigFromEnv(
  env: Env,
  defaults: { serviceName: string; serviceVersion?: string },
): TelemetryConfigResult {
  const warnings: string[] = [];
  const get = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === "" ? undefined : value;
  };

  const disabled = get("OTEL_SDK_DISABLED")?.toLowerCase() === "true";
  const tracesEndpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const baseEndpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");

  let otlpProtocol: OtlpProtocol = OtlpProtocol.httpProtobuf;
  const protocolVar = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? get("OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocolVar !== undefined) {
    if (protocolVar === "grpc" || protocolVar === "http/protobuf" || protocolVar === "http/json") otlpProtocol = protocolVar;
    else warnings.push(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocolVar} is not supported (grpc, http/protobuf, http/json); using http/protobuf`);
  }

  let exporter: TraceExporterKind = tracesEndpoint !== undefined || baseEndpoint !== undefined ? "otlp" : "none";
  const exporterVar = get("OTEL_TRACES_EXPORTER");
  if (exporterVar !== undefined) {
    const first = exporterVar.split(",")[0]?.trim() ?? "";
    if (first === "otlp" || first === "console" || first === "none") exporter = first;
    else warnings.push(`OTEL_TRACES_EXPORTER=${exporterVar} is not supported (otlp, console, none); using ${exporter}`);
  }

  const defaultBase = otlpProtocol === "grpc" ? "http://localhost:4317" : "http://localhost:4318";
  const otlpEndpoint =
    tracesEndpoint ??
    (otlpProtocol === "grpc"
      ? (baseEndpoint ?? defaultBase)
      : `${(baseEndpoint ?? defaultBase).replace(/\/+$/, "")}/v1/traces`);

  let sampleRatio = 1;
  const sampler = get("OTEL_TRACES_SAMPLER");
  const samplerArg = get("OTEL_TRACES_SAMPLER_ARG");
  if (sampler !== undefined) {
    if (sampler === "always_on" || sampler === "parentbased_always_on") sampleRatio = 1;
    else if (sampler === "always_off" || sampler === "parentbased_always_off") sampleRatio = 0;
    else if (sampler === "traceidratio" || sampler === "parentbased_traceidratio") {
      const ratio = Number(samplerArg ?? "1");
      if (Number.isFinite(ratio) && ratio >= 0 && ratio <= 1) sampleRatio = ratio;
      else warnings.push(`OTEL_TRACES_SAMPLER_ARG=${samplerArg ?? ""} is not a ratio in [0, 1]; sampling everything`);
    } else warnings.push(`OTEL_TRACES_SAMPLER=${sampler} is not supported; sampling everything`);
  }

  const metricsEndpoint = get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") ?? baseEndpoint;
  let metricsExporters: MetricsExporterKind[] = metricsEndpoint !== undefined ? ["otlp"] : [];
  const metricsVar = get("OTEL_METRICS_EXPORTER");
  if (metricsVar !== undefined) {
    const names = [...new Set(metricsVar.split(",").map((name) => name.trim()).filter((name) => name !== ""))];
    const known = names.filter((name): name is MetricsExporterKind => name === "otlp" || name === "console");
    if (names.includes("prometheus")) warnings.push("OTEL_METRICS_EXPORTER=prometheus is ignored: set POSELOOP_METRICS_PORT to serve /metrics");
    const unknown = names.filter((name) => name !== "none" && name !== "prometheus" && !(known as string[]).includes(name));
    if (unknown.length > 0) warnings.push(`OTEL_METRICS_EXPORTER: ${unknown.join(", ")} not supported (otlp, console, none); ignored`);
    // As in the SDK, "none" anywhere in the list turns them all off.
    metricsExporters = names.includes("none") ? [] : known;
  }

  let otlpMetricsProtocol: OtlpProtocol = OtlpProtocol.httpProtobuf;
  const metricsProtocolVar = get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") ?? get("OTEL_EXPORTER_OTLP_PROTOCOL");
  if (metricsProtocolVar !== undefined) {
    if (metricsProtocolVar === "grpc" || metricsProtocolVar === "http/protobuf" || metricsProtocolVar === "http/json") otlpMetricsProtocol = metricsProtocolVar;
    else if (get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") !== undefined) warnings.push(`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=${metricsProtocolVar} is not supported (grpc, http/protobuf, http/json); using http/protobuf`);
  }

  const milliseconds = (name: string, fallback: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (Number.isSafeInteger(value) && value > 0) return value;
    warnings.push(`${name}=${raw} is not a positive number of milliseconds; using ${fallback}`);
    return fallback;
  };
  const metricExportIntervalMs = milliseconds("OTEL_METRIC_EXPORT_INTERVAL", 60_000);
  // A timeout longer than the interval would let exports overlap; the SDK clamps it the same way.
  const metricExportTimeoutMs = Math.min(milliseconds("OTEL_METRIC_EXPORT_TIMEOUT", 30_000), metricExportIntervalMs);

  return {
    config: Object.freeze({
      enabled: !disabled,
      serviceName: get("OTEL_SERVICE_NAME") ?? defaults.serviceName,
      serviceVersion: defaults.serviceVersion ?? "0.0.0",
      exporter: disabled ? "none" : exporter,
      otlpProtocol,
      otlpEndpoint,
      sampleRatio,
      metricsExporters: disabled ? [] : metricsExporters,
      otlpMetricsProtocol,
      metricExportIntervalMs,
      metricExportTimeoutMs,
    }),
    warnings,
  };
}

/**
 * POSELOOP_METRICS_PORT: the port of the service's Prometheus endpoint (`/metrics`; 0: a free port, logged at
 * start), on `host`: the host the service's gRPC server listens on, 127.0.0.1 unless it is configured to serve
 * other hosts (with tokens or TLS). Unset or empty: no endpoint. Problems go to `reader`, so that the service's
 * loadConfig reports them with all the others.
 */
export function metricsEndpointFromEnv(reader: EnvReader, host: string): MetricsEndpoint | undefined {
  const port = reader.int("POSELOOP_METRICS_PORT", { default: -1, min: 0, max: 65535 });
  return port < 0 ? undefined : Object.freeze({ host, port });
}
