import { describe, expect, it } from "vitest";
import { AppError, Code, EnvReader } from "@poseloop/core";
import { metricsEndpointFromEnv, telemetryConfigFromEnv } from "@poseloop/telemetry";

describe("telemetryConfigFromEnv", () => {
  it("exports nothing without an endpoint, so a service without a collector stays quiet", () => {
    const { config, warnings } = telemetryConfigFromEnv({}, { serviceName: "trainer" });
    expect(config).toMatchObject({ enabled: true, serviceName: "trainer", exporter: "none", sampleRatio: 1 });
    expect(warnings).toEqual([]);
  });

  it("follows the standard OTLP variables", () => {
    const { config } = telemetryConfigFromEnv(
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/", OTEL_SERVICE_NAME: "inferencer-a" },
      { serviceName: "inferencer" },
    );
    expect(config).toMatchObject({ exporter: "otlp", otlpProtocol: "http/protobuf", otlpEndpoint: "http://collector:4318/v1/traces", serviceName: "inferencer-a" });
    const grpc = telemetryConfigFromEnv(
      { OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317", OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" },
      { serviceName: "x" },
    ).config;
    expect(grpc).toMatchObject({ otlpProtocol: "grpc", otlpEndpoint: "http://collector:4317", sampleRatio: 0.25 });
    const json = telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, { serviceName: "x" }).config;
    expect(json).toMatchObject({ otlpProtocol: "http/json", otlpEndpoint: "http://c:4318/v1/traces" });
    const specific = telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://t:4318/custom" }, { serviceName: "x" }).config;
    expect(specific.otlpEndpoint).toBe("http://t:4318/custom");
  });

  it("warns about values it cannot use and falls back instead of failing", () => {
    const { config, warnings } = telemetryConfigFromEnv(
      { OTEL_TRACES_EXPORTER: "zipkin", OTEL_EXPORTER_OTLP_PROTOCOL: "http/xml", OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" },
      { serviceName: "x" },
    );
    expect(config).toMatchObject({ exporter: "none", otlpProtocol: "http/protobuf", sampleRatio: 1 });
    expect(warnings).toHaveLength(3);
  });

  it("honours OTEL_SDK_DISABLED", () => {
    const { config } = telemetryConfigFromEnv({ OTEL_SDK_DISABLED: "true", OTEL_TRACES_EXPORTER: "console" }, { serviceName: "x" });
    expect(config).toMatchObject({ enabled: false, exporter: "none" });
  });

  it("exports metrics over OTLP by the same rule as traces: when OTEL_METRICS_EXPORTER or an endpoint says so", () => {
    expect(telemetryConfigFromEnv({}, { serviceName: "x" }).config.metricsExporters).toEqual([]);
    expect(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, { serviceName: "x" }).config.metricsExporters).toEqual(["otlp"]);
    expect(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://c:4318/v1/metrics" }, { serviceName: "x" }).config.metricsExporters).toEqual(["otlp"]);
    const listed = telemetryConfigFromEnv({ OTEL_METRICS_EXPORTER: "otlp, console,otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_METRIC_EXPORT_INTERVAL: "5000" }, { serviceName: "x" });
    expect(listed.config).toMatchObject({ metricsExporters: ["otlp", "console"], otlpMetricsProtocol: "grpc", metricExportIntervalMs: 5000, metricExportTimeoutMs: 5000 });
    expect(listed.warnings).toEqual([]);
    const specific = telemetryConfigFromEnv({ OTEL_METRICS_EXPORTER: "console", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json" }, { serviceName: "x" }).config;
    expect(specific).toMatchObject({ metricsExporters: ["console"], otlpMetricsProtocol: "http/json", metricExportIntervalMs: 60_000, metricExportTimeoutMs: 30_000 });
    // "none" anywhere turns metric export off, as in the SDK, endpoint or not.
    expect(telemetryConfigFromEnv({ OTEL_METRICS_EXPORTER: "otlp,none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, { serviceName: "x" }).config.metricsExporters).toEqual([]);
    expect(telemetryConfigFromEnv({ OTEL_METRICS_EXPORTER: "otlp", OTEL_SDK_DISABLED: "true" }, { serviceName: "x" }).config.metricsExporters).toEqual([]);
  });

  it("warns about metric settings it cannot use and keeps the rest", () => {
    const { config, warnings } = telemetryConfigFromEnv(
      { OTEL_METRICS_EXPORTER: "otlp,statsd,prometheus", OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "thrift", OTEL_METRIC_EXPORT_INTERVAL: "soon", OTEL_METRIC_EXPORT_TIMEOUT: "-5" },
      { serviceName: "x" },
    );
    expect(config).toMatchObject({ metricsExporters: ["otlp"], otlpMetricsProtocol: "http/protobuf", metricExportIntervalMs: 60_000, metricExportTimeoutMs: 30_000 });
    // prometheus would bind every interface: /metrics is POSELOOP_METRICS_PORT's, on the service's host.
    expect(warnings).toHaveLength(5);
    expect(warnings.join("\n")).toMatch(/prometheus is ignored: set POSELOOP_METRICS_PORT.*statsd.*thrift.*soon.*-5/s);
  });
});

describe("metricsEndpointFromEnv", () => {
  it("serves no /metrics without POSELOOP_METRICS_PORT, and on the service's host with it (0: a free port)", () => {
    expect(metricsEndpointFromEnv(new EnvReader({}), "127.0.0.1")).toBeUndefined();
    expect(metricsEndpointFromEnv(new EnvReader({ POSELOOP_METRICS_PORT: "" }), "127.0.0.1")).toBeUndefined();
    expect(metricsEndpointFromEnv(new EnvReader({ POSELOOP_METRICS_PORT: "0" }), "127.0.0.1")).toEqual({ host: "127.0.0.1", port: 0 });
    expect(metricsEndpointFromEnv(new EnvReader({ POSELOOP_METRICS_PORT: " 9464 " }), "10.0.0.7")).toEqual({ host: "10.0.0.7", port: 9464 });
  });

  it("reports a port that is not one with the service's other problems", () => {
    for (const [value, problem] of [
      ["http", 'POSELOOP_METRICS_PORT="http" is not an integer'],
      ["9464.5", 'POSELOOP_METRICS_PORT="9464.5" is not an integer'],
      ["-1", "POSELOOP_METRICS_PORT=-1 is below the minimum 0"],
      ["70000", "POSELOOP_METRICS_PORT=70000 is above the maximum 65535"],
    ] as const) {
      const reader = new EnvReader({ POSELOOP_METRICS_PORT: value, POSELOOP_OTHER: "x" });
      metricsEndpointFromEnv(reader, "127.0.0.1");
      reader.problem("another problem");
      let thrown: unknown;
      try {
        reader.done("inferencer configuration");
      } catch (error) {
        thrown = error;
      }
      expect(AppError.is(thrown, Code.INVALID_ARGUMENT)).toBe(true);
      expect((thrown as AppError).problems).toEqual([problem, "another problem"]);
    }
  });
});
