import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { DataLoaderPlace, TrainConfigSchema, TrainingEngine, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { makeTempDir } from "@poseloop/testkit";
import { decodeTrainingState } from "@poseloop/train";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeCheckpoint } from "../runner/checkpoint-file.js";
import { TrainingSession } from "../runner/training-session.js";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { worstWeightError } from "../testing/weight-error.js";

// Debian's interpreter, where CI installs python3-torch: a missing torch fails these tests, it never skips them.
const PYTHON = "/usr/bin/python3";

/**
 * The same tiny job with every augmentation on (so the engine's loader must draw what libs/data draws), its
 * batches built by the trainer's loader or by the engine's torch.utils.data workers.
 */
function config(dataLoader: DataLoaderPlace, loaderWorkers: number): TrainConfig {
  return tinyTrainConfig({
    engine: TrainingEngine.PYTORCH,
    dataLoader,
    loaderWorkers,
    augmentation: { flip: true, rotationFactor: 30, rotationProb: 0.6, scaleFactor: 0.25, halfBodyProb: 0.3, halfBodyMinKeypoints: 3, occlusionProb: 0.3, colorJitter: 0.3 },
  });
}

describe("TRAIN.DATA_LOADER engine: the PyTorch engine builds the batches itself", () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-engine-data-");
  });
  afterAll(async () => dir.remove());

  const init = (train: TrainConfig, extra: { checkpoint?: Uint8Array; workDir?: string } = {}) => ({
    jobId: "engine-data",
    config: toBinary(TrainConfigSchema, train),
    roots: { dataRoot: dir.path, workDir: extra.workDir ?? dir.path },
    python: PYTHON,
    env: { PATH: process.env.PATH },
    engineTimeoutMs: 120_000,
    ...(extra.checkpoint === undefined ? {} : { checkpoint: extra.checkpoint }),
  });

  /** Trains `epochs` whole epochs, chunk by chunk; the loss of every chunk. */
  async function train(session: TrainingSession, epochs: number): Promise<number[]> {
    const losses: number[] = [];
    for (let epoch = 0; epoch < epochs; epoch++) {
      for (;;) {
        const chunk = await session.train(2);
        losses.push(chunk.loss);
        if (chunk.epochEnded) break;
      }
    }
    return losses;
  }

  it("trains on the batches the trainer's loader builds (same losses and weights), and resumes mid-epoch bit for bit", async () => {
    const byTrainer = await TrainingSession.start(init(config(DataLoaderPlace.TRAINER, 1)));
    let reference: number[];
    let referenceState: Uint8Array;
    try {
      reference = await train(byTrainer, 2);
      referenceState = decodeCheckpoint((await byTrainer.checkpoint()).bytes).state;
    } finally {
      await byTrainer.close();
    }

    const byEngine = await TrainingSession.start(init(config(DataLoaderPlace.ENGINE, 2)));
    let midEpoch: Uint8Array;
    let engineState: Uint8Array;
    let losses: number[];
    try {
      expect(byEngine.position.engine).toMatch(/^pytorch /);
      const first = await byEngine.train(2);
      midEpoch = (await byEngine.checkpoint()).bytes;
      expect(first.epochEnded).toBe(false);
      losses = [first.loss, ...(await train(byEngine, 1)), ...(await train(byEngine, 1))];
      engineState = decodeCheckpoint((await byEngine.checkpoint()).bytes).state;
    } finally {
      await byEngine.close();
    }
    // The same crops and heatmaps up to float rounding (the two warps and encoders round alike but for the
    // order of a few float32 operations), so the same losses to ~1e-6 and weights to the engines' rounding.
    expect(losses).toHaveLength(reference.length);
    for (const [i, loss] of losses.entries()) expect(Math.abs(loss - (reference[i] as number))).toBeLessThanOrEqual(1e-5 * Math.abs(reference[i] as number));
    const params = (state: Uint8Array) => new Map([...decodeTrainingState(state).tensors].filter(([name]) => name.startsWith("param:")));
    expect(worstWeightError(params(engineState), params(referenceState)).error).toBeLessThanOrEqual(1e-4);

    // Resumed from batch 2 of epoch 0 with one loader worker instead of two: the plan starts where the
    // checkpoint stopped, and every batch is a function of (seed, epoch, sample), not of the workers.
    const resumed = await TrainingSession.start(init(config(DataLoaderPlace.ENGINE, 1), { checkpoint: midEpoch }));
    try {
      expect(resumed.position).toMatchObject({ epoch: 0, nextBatch: 2 });
      await train(resumed, 2);
      const state = decodeCheckpoint((await resumed.checkpoint()).bytes).state;
      expect(Buffer.compare(Buffer.from(state), Buffer.from(engineState))).toBe(0);
    } finally {
      await resumed.close();
    }
  });

  it("fails the job on a corrupt image, naming it, as the trainer's loader does", async () => {
    // The synthetic set rendered by the first test (or now): break one of its training images.
    const warm = await TrainingSession.start(init(config(DataLoaderPlace.TRAINER, 1)));
    await warm.close();
    const images = await findJpegs(dir.path);
    expect(images.length).toBeGreaterThan(0);
    const victim = images[0] as string;
    const bytes = await readFile(victim);
    await writeFile(victim, bytes.subarray(0, 200));
    try {
      const session = await TrainingSession.start(init(config(DataLoaderPlace.ENGINE, 1)));
      try {
        const failed = await train(session, 1).then(
          () => undefined,
          (error: unknown) => AppError.from(error),
        );
        expect(failed?.code).toBe(Code.INVALID_ARGUMENT);
        expect(failed?.message).toContain(victim.split("/").at(-1));
      } finally {
        await session.close();
      }
    } finally {
      await writeFile(victim, bytes);
    }
  });
});

async function findJpegs(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(".jpg") && entry.parentPath.includes("train")) found.push(join(entry.parentPath, entry.name));
  }
  return found.sort();
}
