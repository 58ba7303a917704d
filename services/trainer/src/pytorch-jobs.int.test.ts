import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { defineModel } from "@poseloop/train";
import { NatsBus, type Bus } from "@poseloop/bus";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Architecture, TrainingEngine, type TrainConfig, type TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { childProcesses, makeTempDir, NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobCheckpointStore } from "./jobs/checkpoint-store.js";
import { loadPretrained } from "./engines/pretrained.js";
import { runContract } from "./experiment/model-contract.js";
import { decodeCheckpoint } from "./runner/checkpoint-file.js";
import { decodeTrainingState } from "@poseloop/train";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// Jobs on the PyTorch engine (Debian's torch, CPU) stopped every way a job stops — a cancel, the engine
// process killed — continue from their last checkpoint and end bit-identical to a run never stopped: the
// engine's state (weights, BatchNorm statistics, optimizer slots, accumulators, counters) round-trips exactly.
const nats = await NatsServer.start();
let dir: { path: string; remove: () => Promise<void> };
let harness: TrainerHarness;
let observer: Bus;
let store: BlobCheckpointStore;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-torch-jobs-");
  harness = await startTrainerHarness(nats.url, dir.path, { POSELOOP_JOB_ACK_WAIT: "3s" });
  observer = await NatsBus.connect({ servers: nats.url, name: "torch-jobs-observer" });
  store = await BlobCheckpointStore.open(observer);
}, 90_000);

afterAll(async () => {
  await harness?.close();
  await observer?.close();
  await nats.dispose();
  await dir?.remove();
});

/** Three epochs of 12 micro-batches, SGD with momentum and accumulation: every kind of state is in play. */
function config(modelName: string, extra: MessageInitShape<typeof TrainConfigSchema> = {}): TrainConfig {
  const base: MessageInitShape<typeof TrainConfigSchema> = {
    name: "torch-jobs",
    engine: TrainingEngine.PYTORCH,
    endEpoch: 3,
    gradAccumSteps: 2,
    clipGradNorm: 1,
    optimizer: { kind: 1, lr: 0.01, momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
    logEverySteps: 2,
    data: { kind: 2, synthetic: { trainImages: 96, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 1, seed: 11n }, name: "torch-jobs" },
    publish: { mode: 1, modelName },
  };
  return tinyTrainConfig({ ...base, ...extra } as MessageInitShape<typeof TrainConfigSchema>);
}

async function finalState(jobId: string): Promise<Buffer> {
  const { checkpoints } = await harness.client.listCheckpoints({ jobId });
  const last = checkpoints.at(-1);
  if (last === undefined) throw new Error(`job ${jobId} has no checkpoints`);
  expect(last.epoch).toBe(3);
  return Buffer.from(decodeCheckpoint(await store.get(last.location, last.digest)).state);
}

async function untilProgress(jobId: string, epoch: number): Promise<void> {
  for await (const r of harness.client.watchJob({ jobId })) {
    const e = r.event?.event;
    if (e?.case === "progress" && e.value.epoch === epoch && e.value.stepInEpoch >= 2) return;
  }
}

/** The PyTorch engine processes the trainer runs now. */
const engineProcesses = (): number[] => childProcesses(process.pid, "poseloop_torch");

describe("PyTorch engine jobs", () => {
  let reference: Buffer;

  beforeAll(async () => {
    const { job } = await harness.client.startTraining({ source: { case: "config", value: config("torch-reference") } });
    const events = await jobEvents(harness.client, job?.jobId ?? "", { skipProgress: true, timeoutMs: 180_000 });
    const end = events.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.SUCCEEDED);
    reference = await finalState(job?.jobId ?? "");
  }, 200_000);

  it("cancels at a step boundary with a checkpoint, resumes, and ends bit-identical to the uninterrupted run", async () => {
    const { job } = await harness.client.startTraining({ source: { case: "config", value: config("torch-cancelled") } });
    const jobId = job?.jobId ?? "";
    await untilProgress(jobId, 1);
    await harness.client.cancelJob({ jobId, reason: "test" });
    const stopped = await jobEvents(harness.client, jobId, { skipProgress: true });
    const end = stopped.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.CANCELLED);
    const saved = stopped.flatMap((e) => (e.event.case === "checkpointSaved" ? [e.event.value.checkpoint] : []));
    expect(saved.at(-1)?.reason).toBe(3); // CANCEL
    expect(saved.at(-1)?.epoch).toBe(1);
    // No engine process outlives its run.
    await waitFor(() => engineProcesses().length === 0, { timeoutMs: 10_000, what: "the engine process gone" });

    await harness.client.resumeJob({ jobId });
    const rest = await jobEvents(harness.client, jobId, { skipProgress: true, timeoutMs: 180_000 });
    const final = rest.at(-1)?.event;
    expect(final?.case === "stateChanged" && final.value.to).toBe(JobState.SUCCEEDED);
    expect(Buffer.compare(await finalState(jobId), reference)).toBe(0);
  });

  it("resumes from the last checkpoint when its engine process is killed, and ends bit-identical", async () => {
    const { job } = await harness.client.startTraining({ source: { case: "config", value: config("torch-killed") } });
    const jobId = job?.jobId ?? "";
    await untilProgress(jobId, 1);
    const victims = engineProcesses();
    expect(victims).toHaveLength(1);
    for (const pid of victims) process.kill(pid, "SIGKILL");
    const events = await jobEvents(harness.client, jobId, { skipProgress: true, timeoutMs: 180_000 });
    const running = events.flatMap((e) => (e.event.case === "stateChanged" && e.event.value.to === JobState.RUNNING ? [e.event.value.reason] : []));
    expect(running).toEqual(["started", expect.stringMatching(/^resumed by .* after its own previous attempt stopped/) as string]);
    const end = events.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.SUCCEEDED);
    const { job: done } = await harness.client.getJob({ jobId });
    expect(done?.attempt).toBe(2);
    expect(Buffer.compare(await finalState(jobId), reference)).toBe(0);
  });

  it.each([TrainingEngine.ONNXRUNTIME, TrainingEngine.PYTORCH])("starts engine %i from MODEL.PRETRAINED, a state_dict with the reference repo's names", async (engine) => {
    // A file as the HRNet reference repo's training saves it (DataParallel's "module." prefix, BatchNorm's
    // num_batches_tracked), for the tiny config's model; an LR of 1e-20, so the run's weights stay the file's.
    const file = `pretrained-${engine}.pth`;
    const base = config("torch-pretrained");
    const contract = runContract(base);
    const model = defineModel(contract.modelConfig);
    const specs = [...model.registry.params, ...model.registry.buffers].map((spec) => [spec.name, spec.shape]);
    execFileSync("/usr/bin/python3", ["-c", [
      "import json, sys, torch",
      "specs = json.loads(sys.argv[1])",
      "g = torch.Generator().manual_seed(7)",
      "sd = {}",
      "for name, shape in specs:",
      "    sd['module.' + name] = torch.rand(shape, generator=g) + 0.5",
      "    if name.endswith('running_var'): sd['module.' + name[:-len('running_var')] + 'num_batches_tracked'] = torch.tensor(5)",
      "torch.save(sd, sys.argv[2])",
    ].join("\n"), JSON.stringify(specs), join(dir.path, file)]);
    const tiny = { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, extra: { case: "lite" as const, value: { channels: [8, 16, 32] } } };
    const run = config(`torch-pretrained-${engine}`, { engine, endEpoch: 1, optimizer: { kind: 1, lr: 1e-20 }, schedule: { kind: 1 }, model: { ...tiny, pretrained: file } });
    const { job } = await harness.client.startTraining({ source: { case: "config", value: run } });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId, { skipProgress: true, timeoutMs: 120_000 });
    const end = events.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.SUCCEEDED);
    const { checkpoints } = await harness.client.listCheckpoints({ jobId });
    const last = checkpoints.at(-1);
    const state = decodeTrainingState(decodeCheckpoint(await store.get(last?.location ?? "", last?.digest ?? "")).state);
    const expected = await loadPretrained({ python: "/usr/bin/python3", file: join(dir.path, file), architecture: contract.modelConfig.architecture, targets: [...model.registry.params, ...model.registry.buffers], env: { PATH: process.env.PATH } });
    expect(expected.size).toBe(model.registry.params.length + model.registry.buffers.length);
    for (const spec of model.registry.params) expect(state.tensors.get(`param:${spec.name}`), spec.name).toEqual(expected.get(spec.name));
  });
});
