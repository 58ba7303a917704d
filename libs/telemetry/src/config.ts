import type { Env } from "@poseloop/core";

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
 * service without a collector does not log export failures.
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

  return {
    config: Object.freeze({
      enabled: !disabled,
      serviceName: get("OTEL_SERVICE_NAME") ?? defaults.serviceName,
      serviceVersion: defaults.serviceVersion ?? "0.0.0",
      exporter: disabled ? "none" : exporter,
      otlpProtocol,
      otlpEndpoint,
      sampleRatio,
    }),
    warnings,
  };
}
