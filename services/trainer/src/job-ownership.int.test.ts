import { createHash } from "node:crypto";
import { toJsonString } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { JobSchema, JobState, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// Two train tokens share a trainer: each may cancel and resume its own jobs, not the other's; an admin token
// may cancel any. A nats-server of this file's own, so no other file's trainer takes these jobs.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());

const ALICE = "train-token-alice-0123456789";
const BOB = "train-token-bob-0123456789";
const ADMIN = "admin-token-0123456789abcdef";
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const principalOf = (token: string) => `token:${createHash("sha256").update(token).digest("hex").slice(0, 12)}`;

/** Long enough to interrupt: 200 training images, 25 micro-batches per epoch, 3 epochs. */
const slowConfig = () =>
  tinyTrainConfig({
    name: "ownership",
    endEpoch: 3,
    data: { kind: 2, synthetic: { trainImages: 200, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 1, seed: 9n }, name: "ownership" },
    publish: { mode: 1, modelName: "ownership" },
  });

async function refusal(call: Promise<unknown>): Promise<AppError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (error === undefined) throw new Error("the call was not refused");
  return AppError.from(error);
}

describe("job ownership", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-ownership-");
    harness = await startTrainerHarness(nats.url, dir.path, { POSELOOP_TRAINER_TOKENS: `train:${ALICE},train:${BOB},admin:${ADMIN}` });
  });
  afterAll(async () => {
    await harness?.close();
    await dir?.remove();
  });

  it("lets only the submitter or an admin cancel or resume a job, and names the submitter without its token", async () => {
    const { client } = harness;
    const started = await client.startTraining({ source: { case: "config", value: slowConfig() } }, bearer(ALICE));
    const jobId = started.job?.jobId ?? "";
    expect(started.job?.submittedBy).toBe(principalOf(ALICE));

    const seen: JobEvent[] = [];
    const watching = (async () => {
      for await (const r of client.watchJob({ jobId }, { ...bearer(ALICE), signal: AbortSignal.timeout(60_000) })) if (r.event !== undefined) seen.push(r.event);
    })();
    // Awaited below; a failure before that must not also surface as an unhandled rejection.
    watching.catch(() => undefined);
    const progressCount = () => seen.filter((e) => e.event.case === "progress").length;
    await waitFor(() => progressCount() > 0, { timeoutMs: 30_000, what: "progress" });

    // Another train token: refused, and the run goes on.
    const refused = await refusal(client.cancelJob({ jobId, reason: "not mine" }, bearer(BOB)));
    expect(refused.code).toBe(Code.PERMISSION_DENIED);
    expect(refused.message).toBe(`job ${jobId} was submitted by another caller; cancelling it needs the admin role`);
    const progressAtRefusal = progressCount();
    await waitFor(() => progressCount() > progressAtRefusal, { timeoutMs: 20_000, what: "progress after the refused cancel" });
    const { job: running } = await client.getJob({ jobId }, bearer(BOB));
    if (running === undefined) throw new Error("GetJob answered no job");
    expect(running.state).toBe(JobState.RUNNING);
    expect(running.submittedBy).toBe(principalOf(ALICE));
    expect(toJsonString(JobSchema, running)).not.toContain(ALICE);

    // Alice's second job waits behind the first (one job at a time): she cancels it herself, Bob may not resume it.
    const second = await client.startTraining({ source: { case: "config", value: slowConfig() } }, bearer(ALICE));
    const secondId = second.job?.jobId ?? "";
    const ownCancel = await client.cancelJob({ jobId: secondId }, bearer(ALICE));
    expect(ownCancel.job?.state).toBe(JobState.CANCELLED);
    const refusedResume = await refusal(client.resumeJob({ jobId: secondId }, bearer(BOB)));
    expect(refusedResume.code).toBe(Code.PERMISSION_DENIED);
    expect(refusedResume.message).toBe(`job ${secondId} was submitted by another caller; resuming it needs the admin role`);
    expect((await client.getJob({ jobId: secondId }, bearer(ALICE))).job?.state).toBe(JobState.CANCELLED);

    // An admin may cancel anyone's job.
    const cancelled = await client.cancelJob({ jobId, reason: "admin" }, bearer(ADMIN));
    expect([JobState.CANCELLING, JobState.CANCELLED]).toContain(cancelled.job?.state);
    await watching;
    const end = seen.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.CANCELLED);

    const { jobs } = await client.listJobs({}, bearer(BOB));
    expect(jobs.map((job) => job.submittedBy)).toEqual([principalOf(ALICE), principalOf(ALICE)]);
  });
});
