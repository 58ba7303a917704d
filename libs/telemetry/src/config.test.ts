import { describe, expect, it } from "vitest";
import { telemetryConfigFromEnv } from "@poseloop/telemetry";

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
});
