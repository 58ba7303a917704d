import { TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { CheckpointReason, JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { childProcesses, makeTempDir, NatsServer } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// The PyTorch engine failing under a job: the job fails saying why, keeps what can be kept, and the trainer
// goes on serving and training. The engine's test hook POSELOOP_TORCH_INJECT makes a step run out of device
// memory as a CUDA one does (no GPU here), or never end; each job's engine gets the trainer's environment as
// it is when the job starts.
const nats = await NatsServer.start();
let dir: { path: string; remove: () => Promise<void> };
let harness: TrainerHarness;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-torch-failures-");
  // A step of the tiny model takes milliseconds; 3 s without an answer is a hang.
  harness = await startTrainerHarness(nats.url, dir.path, { POSELOOP_ENGINE_TIMEOUT: "3s" });
}, 90_000);

afterAll(async () => {
  await harness?.close();
  await nats.dispose();
  await dir?.remove();
  delete process.env.POSELOOP_TORCH_INJECT;
});

/** The PyTorch engine processes the trainer runs now. */
const engineProcesses = (): number[] => childProcesses(process.pid, "poseloop_torch");

describe("a PyTorch engine that fails", () => {
  it("fails the job with the practitioner's advice, keeps the state from before that step, and the trainer runs on", async () => {
    process.env.POSELOOP_TORCH_INJECT = "oom:30";
    const { job } = await harness.client.startTraining({ source: { case: "config", value: tinyTrainConfig({ engine: TrainingEngine.PYTORCH, endEpoch: 8, publish: { modelName: "torch-oom" } }) } });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId, { skipProgress: true, timeoutMs: 180_000 });
    const end = events.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.FAILED);
    const reason = end?.case === "stateChanged" ? end.value.reason : "";
    expect(reason).toMatch(/^out of device memory in step: lower TRAIN\.BATCH_SIZE_PER_GPU, raise TRAIN\.GRAD_ACCUM_STEPS, or turn on TRAIN\.AMP/);
    const saved = events.flatMap((e) => (e.event.case === "checkpointSaved" ? [e.event.value.checkpoint] : []));
    const kept = saved.at(-1);
    expect(kept?.reason).toBe(CheckpointReason.FAILURE);
    // 29 steps were taken; the 30th was not.
    expect(kept?.step).toBe(29n);
    expect(reason).toContain(`the state before that step is checkpoint ${kept?.checkpointId}: start a new job from it with INIT_FROM.JOB_ID ${jobId} and INIT_FROM.CHECKPOINT_ID ${kept?.checkpointId}`);
    const { job: failed } = await harness.client.getJob({ jobId });
    expect(failed?.state).toBe(JobState.FAILED);
    expect(failed?.error?.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(failed?.lastCheckpoint?.checkpointId).toBe(kept?.checkpointId);

    // The trainer lives on: the next job (onnxruntime, no hook) runs to the end.
    const { job: next } = await harness.client.startTraining({ source: { case: "config", value: tinyTrainConfig({ endEpoch: 1, schedule: { kind: 1 }, publish: { modelName: "torch-oom-after" } }) } });
    const after = await jobEvents(harness.client, next?.jobId ?? "", { skipProgress: true });
    const done = after.at(-1)?.event;
    expect(done?.case === "stateChanged" && done.value.to).toBe(JobState.SUCCEEDED);
  });

  it("fails a job whose engine hangs mid-step after POSELOOP_ENGINE_TIMEOUT, keeps its last checkpoint, and kills the engine", async () => {
    process.env.POSELOOP_TORCH_INJECT = "hang:12";
    const { job } = await harness.client.startTraining({ source: { case: "config", value: tinyTrainConfig({ engine: TrainingEngine.PYTORCH, endEpoch: 4, publish: { modelName: "torch-hang" } }) } });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId, { skipProgress: true, timeoutMs: 120_000 });
    const end = events.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.FAILED);
    expect(end?.case === "stateChanged" && end.value.reason).toBe("the pytorch engine did not answer step within 3000 ms and was stopped");
    const { job: failed } = await harness.client.getJob({ jobId });
    expect(failed?.error?.code).toBe(4); // DEADLINE_EXCEEDED
    // The epochs before step 12 each ended in a checkpoint; step 12 never ended.
    expect(failed?.lastCheckpoint?.reason).toBe(CheckpointReason.EPOCH_END);
    expect(failed?.lastCheckpoint?.epoch).toBeGreaterThanOrEqual(1);
    expect(Number(failed?.lastCheckpoint?.step)).toBeLessThan(12);
    expect(engineProcesses()).toEqual([]);
  });
});
