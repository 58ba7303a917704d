import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { context, metrics, propagation, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { silentLogger, type Logger } from "@poseloop/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { startTelemetry, telemetryConfigFromEnv, type Telemetry } from "@poseloop/telemetry";

// The SDK reads its own variables (OTEL_RESOURCE_ATTRIBUTES, the exporters' endpoints) from process.env, so these
// tests set them there, as a deployment would.
let telemetry: Telemetry | undefined;
let receiver: Server | undefined;
afterEach(async () => {
  await telemetry?.shutdown();
  telemetry = undefined;
  receiver?.close();
  receiver = undefined;
  vi.unstubAllEnvs();
  metrics.disable();
  trace.disable();
  context.disable();
  propagation.disable();
});

function stubEnv(env: Record<string, string>): Record<string, string> {
  for (const [name, value] of Object.entries(env)) vi.stubEnv(name, value);
  return env;
}

async function scrape(url: string): Promise<string> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  return response.text();
}

describe("startTelemetry metrics", () => {
  it("serves /metrics on a free port with the service's instruments and the resource of OTEL_RESOURCE_ATTRIBUTES", async () => {
    const env = stubEnv({ OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=staging,k8s.pod.name=inferencer-7" });
    const { config } = telemetryConfigFromEnv(env, { serviceName: "poseloop-test", serviceVersion: "1.2.3" });
    telemetry = await startTelemetry(config, { metrics: { host: "127.0.0.1", port: 0 } });
    const address = telemetry.metricsAddress;
    expect(address?.port).toBeGreaterThan(0);
    expect(address?.url).toBe(`http://127.0.0.1:${address?.port}/metrics`);

    const frames = metrics.getMeter("test").createCounter("poseloop.test.frames", { unit: "{frame}" });
    frames.add(3, { outcome: "ok" });
    const text = await scrape(address?.url ?? "");
    expect(text).toMatch(/^poseloop_test_frames_total\{outcome="ok",.*\} 3$/m);
    const targetInfo = text.split("\n").find((line) => line.startsWith("target_info{")) ?? "";
    expect(targetInfo).toContain('service_name="poseloop-test"');
    expect(targetInfo).toContain('service_version="1.2.3"');
    expect(targetInfo).toContain('deployment_environment_name="staging"');
    expect(targetInfo).toContain('k8s_pod_name="inferencer-7"');

    expect((await fetch(address?.url.replace("/metrics", "/other") ?? "")).status).toBe(404);
    await telemetry.shutdown();
    await expect(fetch(address?.url ?? "")).rejects.toThrow();
  });

  it("lets OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME name the service, and spans carry the same resource", async () => {
    const env = stubEnv({ OTEL_RESOURCE_ATTRIBUTES: "service.namespace=poseloop,service.instance.id=i-42", OTEL_SERVICE_NAME: "inferencer-eu" });
    const { config } = telemetryConfigFromEnv(env, { serviceName: "poseloop-inferencer" });
    const spans = new InMemorySpanExporter();
    telemetry = await startTelemetry(config, { extraSpanProcessors: [new SimpleSpanProcessor(spans)] });
    trace.getTracer("test").startSpan("work").end();
    // The span leaves once the host detector's asynchronous attributes (host.id) are in.
    await vi.waitFor(() => expect(spans.getFinishedSpans()).toHaveLength(1), { timeout: 5_000, interval: 20 });
    const resource = spans.getFinishedSpans()[0]?.resource;
    expect(resource?.attributes).toMatchObject({ "service.name": "inferencer-eu", "service.namespace": "poseloop", "service.instance.id": "i-42" });
  });

  it("exports over OTLP where OTEL_METRICS_EXPORTER and the SDK's OTLP variables say", async () => {
    const bodies: unknown[] = [];
    const paths: string[] = [];
    receiver = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        paths.push(request.url ?? "");
        bodies.push(JSON.parse(body));
        response.end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver?.listen(0, "127.0.0.1", resolve));
    const port = (receiver.address() as AddressInfo).port;
    const env = stubEnv({
      OTEL_METRICS_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
      // Read by the SDK's exporter itself, not by PoseLoop.
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `http://127.0.0.1:${port}/custom/metrics`,
      OTEL_METRIC_EXPORT_INTERVAL: "100",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=ci",
    });
    const { config, warnings } = telemetryConfigFromEnv(env, { serviceName: "poseloop-trainer" });
    expect(warnings).toEqual([]);
    telemetry = await startTelemetry(config);
    expect(telemetry.metricsAddress).toBeUndefined();
    metrics.getMeter("test").createCounter("poseloop.test.steps").add(5);
    await vi.waitFor(() => expect(JSON.stringify(bodies)).toContain("poseloop.test.steps"), { timeout: 5_000, interval: 50 });
    expect(paths[0]).toBe("/custom/metrics");
    const resource = JSON.stringify((bodies[0] as { resourceMetrics: { resource: unknown }[] }).resourceMetrics[0]?.resource);
    expect(resource).toContain("deployment.environment.name");
    expect(resource).toContain("poseloop-trainer");
  });

  it("fails to start, naming the variable, when the port is taken", async () => {
    const { config } = telemetryConfigFromEnv({}, { serviceName: "x" });
    telemetry = await startTelemetry(config, { metrics: { host: "127.0.0.1", port: 0 } });
    const taken = telemetry.metricsAddress?.port ?? 0;
    await expect(startTelemetry(config, { metrics: { host: "127.0.0.1", port: taken } })).rejects.toThrow(/POSELOOP_METRICS_PORT/);
  });

  it("records nothing and serves nothing with OTEL_SDK_DISABLED", async () => {
    const { config } = telemetryConfigFromEnv({ OTEL_SDK_DISABLED: "true" }, { serviceName: "x" });
    const warned: string[] = [];
    const logger: Logger = { ...silentLogger, warn: (msg) => void warned.push(msg) };
    telemetry = await startTelemetry(config, { metrics: { host: "127.0.0.1", port: 0 }, logger });
    expect(telemetry.metricsAddress).toBeUndefined();
    expect(warned).toEqual(["OTEL_SDK_DISABLED=true: no metrics are recorded and /metrics is not served"]);
  });
});
