import { chmod, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { Device, TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PYTORCH_ENGINE_DIR } from "./engines/python.js";
import { startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// Two trainers on one real nats-server: "torch-cpu" has a PyTorch engine without CUDA (a fake interpreter that
// answers the probe the way the engine does), "ort-only" has none (POSELOOP_PYTHON names no program). What a
// user sees: who can run what, a job nobody can run refused at once, and a PyTorch job run only where it can be.

const nats = await NatsServer.start();
let dir: { path: string; remove: () => Promise<void> };
let torchCpu: TrainerHarness;
let ortOnly: TrainerHarness;

const HELLO = { type: "hello", protocol: 1, torch: "1.13.0-fake", python: "3.11.2", cuda: { available: false, devices: [] }, bf16: true, distributed: { gloo: true, nccl: false } };

beforeAll(async () => {
  dir = await makeTempDir("poseloop-placement-");
  const fakePython = join(dir.path, "fake-python");
  await writeFile(fakePython, `#!/bin/sh\necho '${JSON.stringify(HELLO)}'\n`);
  await chmod(fakePython, 0o755);
  [torchCpu, ortOnly] = await Promise.all([
    startTrainerHarness(nats.url, join(dir.path, "a"), { POSELOOP_WORKER_ID: "torch-cpu", POSELOOP_PYTHON: fakePython }),
    startTrainerHarness(nats.url, join(dir.path, "b"), { POSELOOP_WORKER_ID: "ort-only", POSELOOP_PYTHON: "/nonexistent/python3" }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([torchCpu?.close(), ortOnly?.close()]);
  await dir?.remove();
  await nats.dispose();
});

const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as AppError);

describe("GetTrainerInfo", () => {
  it("reports this trainer's engines and devices and the other live trainers'", async () => {
    const { trainer, others } = await ortOnly.client.getTrainerInfo({});
    expect(trainer?.workerId).toBe("ort-only");
    const engines = Object.fromEntries((trainer?.engines ?? []).map((engine) => [engine.name, engine]));
    expect(engines["onnxruntime"]?.devices).toContain("cpu");
    expect(engines["pytorch"]).toMatchObject({ available: false, reason: "/nonexistent/python3: not found" });
    expect(trainer?.placements).toEqual(expect.arrayContaining(["onnxruntime-cpu"]));
    expect(trainer?.placements).not.toContain("pytorch-cpu");

    const other = others.find((info) => info.workerId === "torch-cpu");
    const torch = other?.engines.find((engine) => engine.name === "pytorch");
    expect(torch).toMatchObject({ available: true, version: "1.13.0-fake", devices: ["cpu"], gpuCount: 0, bf16: true });
    expect(other?.placements).toEqual(expect.arrayContaining(["onnxruntime-cpu", "pytorch-cpu"]));
  });
});

describe("StartTraining", () => {
  it("refuses a job no live trainer can run with FAILED_PRECONDITION naming device, engine and each trainer's reason, and records nothing", async () => {
    const before = (await torchCpu.client.listJobs({})).jobs.length;
    const config = tinyTrainConfig({ engine: TrainingEngine.PYTORCH, device: Device.CUDA });
    const error = await failure(torchCpu.client.startTraining({ source: { case: "config", value: config } }));
    expect(AppError.is(error, Code.FAILED_PRECONDITION)).toBe(true);
    expect(error?.message).toContain("no trainer can run engine pytorch on cuda");
    expect(error?.message).toContain("ort-only: /nonexistent/python3: not found");
    expect(error?.message).toContain("torch-cpu: torch.cuda.is_available() is false");
    expect((await torchCpu.client.listJobs({})).jobs).toHaveLength(before);
  });

  it("refuses TRAIN.DEVICE=cuda with TRAIN.ENGINE=pytorch from an experiment file the same way", async () => {
    const yaml = [
      "MODEL: { NAME: pose_lite, IMAGE_SIZE: [48, 64], EXTRA: { CHANNELS: [8, 16, 32] } }",
      "DATASET: { DATASET: synthetic, SYNTHETIC: { TRAIN_IMAGES: 8, VAL_IMAGES: 4, IMAGE_SIZE: [128, 96] } }",
      "TRAIN: { LR: 0.001, OPTIMIZER: adam, BATCH_SIZE_PER_GPU: 4, END_EPOCH: 1, ENGINE: pytorch, DEVICE: cuda }",
      "TEST: { USE_GT_BBOX: true }",
      "PUBLISH: { MODE: never }",
    ].join("\n");
    const error = await failure(ortOnly.client.startTraining({ source: { case: "experimentYaml", value: yaml } }));
    expect(AppError.is(error, Code.FAILED_PRECONDITION)).toBe(true);
    expect(error?.message).toMatch(/^no trainer can run engine pytorch on cuda: /);
  });

  it("routes a PyTorch job only to the trainer that can run it, whichever trainer accepted it", async () => {
    // Submitted to the trainer without PyTorch: it queues the job but never takes it.
    const config = tinyTrainConfig({ engine: TrainingEngine.PYTORCH });
    const { job } = await ortOnly.client.startTraining({ source: { case: "config", value: config } });
    const taken = await waitFor(
      async () => {
        const { job: current } = await ortOnly.client.getJob({ jobId: job!.jobId });
        return current !== undefined && current.workerId !== "" ? current : undefined;
      },
      { timeoutMs: 15_000 },
    );
    expect(taken.workerId).toBe("torch-cpu");
    expect(taken.attempt).toBe(1);
    await ortOnly.client.cancelJob({ jobId: job!.jobId }).catch(() => undefined);
    await waitFor(async () => {
      const { job: current } = await ortOnly.client.getJob({ jobId: job!.jobId });
      return current !== undefined && [JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED].includes(current.state) ? true : undefined;
    }, { timeoutMs: 15_000 });
  }, 30_000);
});

describe("the real PyTorch probe", () => {
  // Debian's python3 has torch where pyenv's python3, first on PATH, does not: the probe must find it.
  it.skipIf(!existsSync(join(PYTORCH_ENGINE_DIR, "poseloop_torch", "__main__.py")) || !existsSync("/usr/bin/python3"))(
    "finds an interpreter with torch and reports its version",
    async () => {
      const { pytorchCapability } = await import("./engines/capabilities.js");
      const capability = await pytorchCapability(process.env, { timeoutMs: 30_000 });
      expect(capability.available, capability.reason).toBe(true);
      expect(capability.version).toMatch(/^\d+\.\d+/);
      expect(capability.devices).toContain("cpu");
    },
    40_000,
  );
});
