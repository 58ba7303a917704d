import { metrics } from "@opentelemetry/api";
import { DeliveryMode, type StreamKeypointsResponse } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { startTelemetry, type Telemetry } from "@poseloop/telemetry";
import { waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadConfig } from "./config.js";
import { pacedJpegFrames, startHarness, streamRequests, syntheticJpegs, type InferencerHarness } from "./testing/harness.js";
import { buildBrokenTestModel, buildTestModel, publishTestModel } from "./testing/test-models.js";

// A Prometheus scrape of a real inferencer (gRPC, NATS, onnxruntime) while a stream runs: the counters a
// dashboard is built on must move with the frames, and name the version that serves them. The names are the
// ones the exporter writes: dots become underscores and counters end in _total, but units are not appended
// (exporter-prometheus 0.223 writes them as "# UNIT" lines only).
const natsUrl = inject("natsUrl");
const MODEL = "metrics";
const FRAMES = 40;

let telemetry: Telemetry;
let harness: InferencerHarness;
let metricsUrl: string;
let version: string;
let jpegs: Uint8Array[];

beforeAll(async () => {
  const env = { POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_NATS_URL: natsUrl, POSELOOP_MODEL: MODEL, POSELOOP_METRICS_PORT: "0" };
  const config = loadConfig(env);
  // As main.ts does: the telemetry first, so the service's parts find the MeterProvider when they are built.
  telemetry = await startTelemetry(config.telemetry, { metrics: config.metrics });
  metricsUrl = telemetry.metricsAddress?.url ?? "";
  let model;
  [model, jpegs, harness] = await Promise.all([buildTestModel({ seed: 1 }), syntheticJpegs(8), startHarness(natsUrl, MODEL, env)]);
  version = (await publishTestModel(harness.registry, MODEL, model)).manifest.model?.version ?? "";
  await harness.inferencer.models.waitForServing(20_000);
});

afterAll(async () => {
  await harness?.close();
  await telemetry?.shutdown();
  metrics.disable();
});

/** The samples of a scrape, by series ("name{labels}") with the labels in the exporter's order. */
async function scrape(): Promise<{ text: string; value: (name: string, labels?: Record<string, string>) => number | undefined }> {
  const response = await fetch(metricsUrl);
  expect(response.status).toBe(200);
  const text = await response.text();
  const value = (name: string, labels: Record<string, string> = {}): number | undefined => {
    const wanted = Object.entries(labels).map(([key, val]) => `${key}="${val}"`);
    let sum: number | undefined;
    for (const line of text.split("\n")) {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
      if (match === null || match[1] !== name) continue;
      const have = (match[2] ?? "").split(/,(?=[a-zA-Z_]+=")/);
      if (wanted.every((label) => have.includes(label))) sum = (sum ?? 0) + Number(match[3]);
    }
    return sum;
  };
  return { text, value };
}

describe("inferencer metrics on /metrics", () => {
  it("serves on the port POSELOOP_METRICS_PORT=0 chose, 127.0.0.1 like the gRPC server, naming the serving version", async () => {
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const { value, text } = await scrape();
    expect(value("poseloop_inferencer_model_serving", { poseloop_model_name: MODEL, poseloop_model_version: version }), text).toBe(1);
    expect(value("poseloop_inferencer_model_swap_duration_count", { poseloop_model_name: MODEL })).toBe(1);
    expect(value("poseloop_inferencer_model_load_failures_total"), "no load failed").toBeUndefined();
    expect(text).toMatch(/^target_info\{.*service_name="poseloop-inferencer"/m);
  });

  it("counts a running stream's frames as they are answered, with stage latencies, batches and RPC durations", async () => {
    const before = (await scrape()).value("poseloop_inferencer_frames_total", { outcome: "ok" }) ?? 0;
    const responses: StreamKeypointsResponse[] = [];
    const stream = (async () => {
      const requests = streamRequests({ delivery: DeliveryMode.EVERY_FRAME, streamName: "metrics-cam" }, pacedJpegFrames(jpegs, FRAMES, 40));
      for await (const response of harness.client.streamKeypoints(requests)) responses.push(response);
    })();

    // Mid-stream: the counter has moved, the stream is open, and frames are still to come.
    let during = { frames: 0, streams: 0 };
    await waitFor(
      async () => {
        const { value } = await scrape();
        during = { frames: (value("poseloop_inferencer_frames_total", { poseloop_model_name: MODEL, outcome: "ok" }) ?? 0) - before, streams: value("poseloop_inferencer_streams_active") ?? 0 };
        return during.frames >= 5;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: "the frame counter moving" },
    );
    expect(during.frames).toBeLessThan(FRAMES);
    expect(during.streams).toBe(1);
    await stream;

    const answered = responses.filter((r) => r.payload.case === "result");
    expect(answered).toHaveLength(FRAMES);
    const { value, text } = await scrape();
    expect((value("poseloop_inferencer_frames_total", { outcome: "ok" }) ?? 0) - before).toBe(FRAMES);
    expect(value("poseloop_inferencer_streams_active")).toBe(0);
    for (const stage of ["decode", "pose", "post", "total"]) {
      expect(value("poseloop_inferencer_frame_duration_count", { stage }), `stage ${stage}`).toBeGreaterThanOrEqual(FRAMES);
    }
    expect(value("poseloop_inferencer_frame_duration_count", { stage: "detect" })).toBeUndefined();
    expect(value("poseloop_inferencer_batch_size_count")).toBeGreaterThan(0);
    expect(value("poseloop_inferencer_batch_size_sum")).toBeGreaterThanOrEqual(FRAMES);
    expect(value("poseloop_inferencer_queue_depth")).toBe(0);
    const rpc = { rpc_system: "grpc", rpc_service: "poseloop.inference.v1.InferenceService", rpc_method: "StreamKeypoints", rpc_grpc_status_code: "0" };
    expect(value("rpc_server_call_duration_count", rpc), text).toBe(1);
    expect(value("rpc_server_call_duration_bucket", { ...rpc, le: "+Inf" })).toBe(1);
  });

  it("counts a version that fails to load, and keeps reporting the one that serves", async () => {
    const before = (await scrape()).value("poseloop_inferencer_model_load_failures_total") ?? 0;
    await publishTestModel(harness.registry, MODEL, await buildBrokenTestModel("batch-fixed-at-1", { seed: 3 }));
    await waitFor(async () => (await scrape()).value("poseloop_inferencer_model_load_failures_total", { poseloop_model_name: MODEL }) === before + 1, {
      timeoutMs: 20_000,
      intervalMs: 50,
      what: "the load failure counted",
    });
    const { value } = await scrape();
    expect(value("poseloop_inferencer_model_serving", { poseloop_model_version: version })).toBe(1);
    expect(value("poseloop_inferencer_model_serving")).toBe(1);
    expect(value("poseloop_inferencer_model_swap_duration_count")).toBe(1);
  });
});
