import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TraceCollector } from "@poseloop/cli";
import { tinyExperiment } from "@poseloop/cli/testing";
import { makeTempDir, NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliSession, jsonLines } from "./cli-session.js";

// The whole loop as it runs in production: a NATS server, the trainer and the inferencer as separate
// processes exporting spans over OTLP/JSON to a receiver in this test, and the poseloop CLI driving them.
// The NATS server is this file's own: trainers on one bus share its job queue, and a trainer of another
// test file (which exports nowhere) must not take this file's job.
const TRAINER = "services/trainer/src/main.ts";
const INFERENCER = "services/inferencer/src/main.ts";
const model = `e2e-${process.pid}`;

let nats: NatsServer;
let receiver: TraceCollector;
let dir: { path: string; remove: () => Promise<void> };
let trainer: ServiceProcess | undefined;
let inferencer: ServiceProcess | undefined;
let env: Record<string, string>;

const cli = cliSession(() => ({ env, cwd: dir.path }));

beforeAll(async () => {
  [nats, receiver, dir] = await Promise.all([NatsServer.start(), TraceCollector.start(), makeTempDir("poseloop-e2e-")]);
  await writeFile(join(dir.path, "tiny.yaml"), tinyExperiment(model, "e2e-tiny"));
  const common = {
    POSELOOP_NATS_URL: nats.url,
    POSELOOP_LOG_LEVEL: "info",
    POSELOOP_DRAIN_TIMEOUT: "2s",
    OTEL_TRACES_EXPORTER: "otlp",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_TRACES_SAMPLER: "always_on",
    OTEL_BSP_SCHEDULE_DELAY: "200",
  };
  [trainer, inferencer] = await Promise.all([
    spawnService(
      TRAINER,
      { ...common, OTEL_SERVICE_NAME: "poseloop-trainer", POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: join(dir.path, "data"), POSELOOP_WORK_DIR: join(dir.path, "work") },
      90_000,
    ),
    spawnService(
      INFERENCER,
      { ...common, OTEL_SERVICE_NAME: "poseloop-inferencer", POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: model, POSELOOP_FRAME_TRACE_RATIO: "1" },
      90_000,
    ),
  ]);
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.port}`, POSELOOP_INFERENCER_ADDR: `127.0.0.1:${inferencer.port}` };
}, 180_000);

afterAll(async () => {
  await Promise.all([trainer?.stop("SIGKILL"), inferencer?.stop("SIGKILL")]);
  await Promise.all([nats?.dispose(), receiver?.close()]);
  await dir?.remove();
});

interface TrainLine {
  type: string;
  job?: { jobId: string; state: string; traceId?: string };
  event?: { published?: { manifest: { model: { name: string; version: string } }; promoted?: boolean } };
}

interface StreamLine {
  type: string;
  frame?: number;
  result?: { frameId: string; model?: { name: string; version: string }; status?: { code?: number }; traceId?: string; persons?: unknown[] };
  dropped?: number;
}

describe("the PoseLoop loop: train → publish → serve → trace", () => {
  const run = { jobId: "", jobTraceId: "", version: "", frames: [] as { frameId: string; traceId: string }[] };

  it("trains with the CLI, publishes a version, and a stream gets keypoints from it", async () => {
    const training = await cli(["train", "--cfg", "tiny.yaml", "--json"]);
    expect(training.stderr).toBe("");
    expect(training.code).toBe(0);
    const lines = jsonLines<TrainLine>(training.stdout);
    run.jobId = lines[0]?.job?.jobId ?? "";
    const publication = lines.find((line) => line.event?.published !== undefined)?.event?.published;
    expect(publication).toMatchObject({ promoted: true, manifest: { model: { name: model } } });
    run.version = publication?.manifest.model.version ?? "";
    const finished = lines.at(-1);
    expect(finished).toMatchObject({ type: "finished", job: { jobId: run.jobId, state: "JOB_STATE_SUCCEEDED" } });
    run.jobTraceId = finished?.job?.traceId ?? "";
    expect(run.jobTraceId).toMatch(/^[0-9a-f]{32}$/);

    // The inferencer loads a published version on its own; the stream starts once it serves.
    await waitFor(
      async () => {
        const models = await cli(["models", "--json"]);
        const serving = models.code === 0 ? (JSON.parse(models.stdout) as { serving: { manifest?: { model?: { version?: string } } } }).serving : undefined;
        return serving?.manifest?.model?.version === run.version;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `${model}@${run.version} serving` },
    );

    const stream = await cli(["stream", "--synthetic", "--frames", "8", "--width", "160", "--height", "120", "--json"]);
    expect(stream.stderr).toBe("");
    expect(stream.code).toBe(0);
    const streamed = jsonLines<StreamLine>(stream.stdout);
    const results = streamed.flatMap((line) => (line.type === "result" && line.result !== undefined ? [line.result] : []));
    expect(results.map((result) => Number(result.frameId))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    for (const result of results) {
      expect(result.model).toMatchObject({ name: model, version: run.version });
      expect(result.status?.code ?? 0).toBe(0);
      expect(result.traceId).toMatch(/^[0-9a-f]{32}$/);
    }
    expect(streamed.at(-1)).toMatchObject({ type: "summary", dropped: 0 });
    run.frames = results.map((result) => ({ frameId: result.frameId, traceId: result.traceId ?? "" }));
  });

  it("traces it as one chain: job → publish → registry → model load → every frame", async () => {
    // SIGTERM: each service drains and flushes its spans before it exits.
    expect(await trainer?.stop()).toBe(0);
    expect(await inferencer?.stop()).toBe(0);

    const job = receiver.named("training.job").find((span) => span.attributes["poseloop.training.job_id"] === run.jobId);
    expect(job, "the training.job span").toBeDefined();
    expect(job?.service).toBe("poseloop-trainer");
    // The trace id the trainer reported for the job is that of its span, begun at StartTraining.
    expect(job?.traceId).toBe(run.jobTraceId);
    const start = receiver.named("poseloop.trainer.v1.TrainerService/StartTraining").find((span) => span.attributes["poseloop.training.job_id"] === run.jobId);
    expect(start?.traceId).toBe(job?.traceId);
    expect(job?.parentSpanId).toBe(start?.spanId);

    const publish = receiver.named("training.publish").find((span) => span.attributes["poseloop.training.job_id"] === run.jobId);
    expect(publish, "the training.publish span").toBeDefined();
    expect(publish).toMatchObject({ service: "poseloop-trainer", traceId: job?.traceId, parentSpanId: job?.spanId, attributes: { "poseloop.model.name": model, "poseloop.model.version": run.version } });

    const registry = receiver.named("registry.publish").find((span) => span.parentSpanId === publish?.spanId);
    expect(registry, "registry.publish under training.publish").toBeDefined();
    expect(registry).toMatchObject({ traceId: job?.traceId, attributes: { "poseloop.model.version": run.version, "poseloop.training.job_id": run.jobId } });
    const publishContext = { traceId: registry?.traceId, spanId: registry?.spanId };

    const load = receiver.named("model.load").find((span) => span.attributes["poseloop.model.version"] === run.version);
    expect(load, "the inferencer's model.load span").toBeDefined();
    expect(load).toMatchObject({ service: "poseloop-inferencer", attributes: { "poseloop.model.name": model, "poseloop.training.job_id": run.jobId } });
    expect(load?.links).toContainEqual(publishContext);

    const frames = receiver.named("frame").filter((span) => span.attributes["poseloop.model.version"] === run.version);
    expect(frames.length).toBeGreaterThanOrEqual(run.frames.length);
    // Each frame is a trace of its own (not a child of the stream's never-ending call), linked to the stream.
    const streamCall = receiver.named("poseloop.inference.v1.InferenceService/StreamKeypoints");
    expect(streamCall, "the StreamKeypoints span").toHaveLength(1);
    const streamContext = { traceId: streamCall[0]?.traceId, spanId: streamCall[0]?.spanId };
    for (const frame of frames) {
      expect(frame).toMatchObject({ service: "poseloop-inferencer", parentSpanId: "", attributes: { "poseloop.model.name": model, "poseloop.training.job_id": run.jobId } });
      expect(frame.traceId).not.toBe(streamContext.traceId);
      expect(frame.links).toContainEqual(publishContext);
      expect(frame.links).toContainEqual(streamContext);
    }
    expect(new Set(frames.map((frame) => frame.traceId)).size).toBe(frames.length);
    // FrameResult.trace_id finds the frame's span in the tracing backend.
    for (const { frameId, traceId } of run.frames) {
      expect(frames.some((span) => span.traceId === traceId && String(span.attributes["poseloop.frame.id"]) === frameId), `frame ${frameId} in trace ${traceId}`).toBe(true);
    }
  });
});
