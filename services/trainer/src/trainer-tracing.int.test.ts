import { trace } from "@opentelemetry/api";
import { AppError, Code } from "@poseloop/core";
import { BearerTokenFailure } from "@poseloop/grpc";
import { installTestTelemetry, type TestTelemetry } from "@poseloop/telemetry";
import { NatsServer, makeTempDir, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// A nats-server of this file's own: trainers on one bus share the training queue, and another file's
// trainer must not take this file's jobs.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());
const natsUrl = nats.url;

describe("trainer traces and security", () => {
  let telemetry: TestTelemetry;
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    telemetry = installTestTelemetry("trainer");
    dir = await makeTempDir("poseloop-trainer-tracing-");
    harness = await startTrainerHarness(natsUrl, dir.path, { POSELOOP_TRAINER_TOKEN: "s3cret-token" });
  });
  afterAll(async () => {
    await harness.close();
    await dir.remove();
    await telemetry.shutdown();
  });

  it("refuses calls without the bearer token, telling a missing token from a refused one", async () => {
    const error = await harness.client.listJobs({}).catch((e: unknown) => e);
    expect(AppError.is(error, Code.UNAUTHENTICATED)).toBe(true);
    expect((error as AppError).message).toContain(BearerTokenFailure.MISSING);
    const wrong = await harness.client.listJobs({}, { headers: { authorization: "Bearer nope" } }).catch((e: unknown) => e);
    expect(AppError.is(wrong, Code.UNAUTHENTICATED)).toBe(true);
    expect((wrong as AppError).message).toContain(BearerTokenFailure.REFUSED);
    await expect(harness.client.listJobs({}, { headers: { authorization: "Bearer s3cret-token" } })).resolves.toBeDefined();
    await expect(harness.client.listJobs({}, { headers: { authorization: "bearer s3cret-token" } })).resolves.toBeDefined();
  });

  it("traces the job: job, epochs, validation, export, quantization and publish in one trace, the publish context on the NATS event", async () => {
    const headers = { authorization: "Bearer s3cret-token" };
    const published: string[] = [];
    const controller = new AbortController();
    const contexts = (async () => {
      for await (const { context } of harness.registry.subscribePublished("traced", controller.signal)) published.push(trace.getSpanContext(context)?.spanId ?? "");
    })().catch(() => undefined);
    const { job } = await harness.client.startTraining({ source: { case: "config", value: tinyTrainConfig({ publish: { modelName: "traced" }, endEpoch: 1, schedule: { kind: 1 } }) } }, { headers });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents({ ...harness.client, watchJob: (r, o) => harness.client.watchJob(r, { ...o, headers }) }, jobId);
    expect(events.at(-1)?.event.case).toBe("stateChanged");
    controller.abort();
    await contexts;

    // The job span ends just after the final event is written.
    await waitFor(() => telemetry.spansNamed("training.job").some((s) => s.attributes["poseloop.training.job_id"] === jobId), { what: "the job span" });
    const spans = telemetry.spans();
    const named = (name: string) => spans.filter((s) => s.name === name && (s.attributes["poseloop.training.job_id"] === jobId || name === "registry.publish"));
    const jobSpan = named("training.job")[0];
    expect(jobSpan).toBeDefined();
    const traceId = jobSpan?.spanContext().traceId;
    expect(job?.traceId).toBe(traceId);
    for (const name of ["training.epoch", "training.validate", "training.export", "training.quantize", "training.publish"]) {
      const found = named(name);
      expect(found.length, name).toBeGreaterThan(0);
      expect(found.every((s) => s.spanContext().traceId === traceId), name).toBe(true);
    }
    const publish = named("training.publish")[0];
    const registryPublish = spans.find((s) => s.name === "registry.publish" && s.parentSpanContext?.spanId === publish?.spanContext().spanId);
    expect(registryPublish).toBeDefined();
    // Consumers of ModelPublished get the registry.publish span's context from the NATS headers.
    expect(published).toContain(registryPublish?.spanContext().spanId);
  });
});
