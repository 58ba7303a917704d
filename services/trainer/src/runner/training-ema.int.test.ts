import { createHash } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { OptimizerKind, TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { encodeModel } from "@poseloop/onnx";
import { makeTempDir } from "@poseloop/testkit";
import { decodeTrainingState, encodeTrainingState, IoNames } from "@poseloop/train";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { inferenceModel, modelFromState } from "../publication/model-export.js";
import { ModelEvaluator } from "../publication/model-evaluator.js";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { decodeCheckpoint } from "./checkpoint-file.js";
import { TrainingRun } from "./training-run.js";

const digest = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

describe("a training run with TRAIN.EMA", () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-ema-run-");
  });
  afterAll(async () => dir.remove());

  // A decay far from practice and no warm-up, so that a few updates leave the average visibly behind the
  // weights; a high LR so that they move. (The run is driven in this thread, as its worker drives it.)
  const config = tinyTrainConfig({ ema: { decay: 0.8, warmupUpdates: 0 }, optimizer: { kind: OptimizerKind.ADAM, lr: 1e-2 }, quantization: { enabled: false } });
  const init = () => ({ jobId: "job-ema", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: dir.path, workDir: dir.path } });

  it("validates and exports the moving average while the raw weights train, and resumes bit-identically", async () => {
    // Which models the run evaluates: the spy calls the real evaluator and keeps its arguments.
    const watched = vi.spyOn(ModelEvaluator.prototype, "evaluate");

    const run = await TrainingRun.create(init());
    let early: Uint8Array;
    let checkpoint: ReturnType<typeof decodeCheckpoint>;
    try {
      await run.train(2);
      early = (await run.checkpoint()).bytes;
      await run.train(3);
      await run.validate();
      const exported = await run.export();
      checkpoint = decodeCheckpoint((await run.checkpoint()).bytes);
      const state = decodeTrainingState(checkpoint.state);

      // The export holds the average, not the trained weights.
      const weights = decodeTrainingState(exported.weights).tensors;
      for (const [key, value] of weights) expect(value, key).toEqual(state.tensors.get(`ema:${key}`));
      const name = "final_layer.weight";
      expect(weights.get(IoNames.param(name))).not.toEqual(state.tensors.get(IoNames.param(name)));

      // Validation and the export's AP gate evaluated the model of the average (which is also what `poseloop
      // val` builds from this checkpoint), never the model of the trained weights.
      const ofAverage = modelFromState(run.contract.modelConfig, checkpoint.state);
      const ofRaw = modelFromState(run.contract.modelConfig, encodeRaw(state));
      const averageDigest = digest(encodeModel(inferenceModel(ofAverage.model, ofAverage.weights)));
      const rawDigest = digest(encodeModel(inferenceModel(ofRaw.model, ofRaw.weights)));
      expect(averageDigest).not.toBe(rawDigest);
      expect(watched.mock.calls.map(([model]) => digest(model))).toEqual([averageDigest, averageDigest]);
      expect(digest(exported.fp32)).toBe(averageDigest);
    } finally {
      watched.mockRestore();
      await run.close();
    }

    // Resumed from the early checkpoint, the run ends where the uninterrupted one did: weights, optimizer and average.
    const resumed = await TrainingRun.create({ ...init(), checkpoint: early });
    try {
      await resumed.train(3);
      const again = decodeCheckpoint((await resumed.checkpoint()).bytes);
      expect(again.header.step).toBe(checkpoint.header.step);
      expect([...decodeTrainingState(again.state).tensors.keys()].some((key) => key.startsWith("ema:"))).toBe(true);
      expect(Buffer.compare(Buffer.from(again.state), Buffer.from(checkpoint.state))).toBe(0);
    } finally {
      await resumed.close();
    }
  });
});

/** The state without its moving average: the trained weights alone. */
function encodeRaw(state: ReturnType<typeof decodeTrainingState>): Uint8Array {
  return encodeTrainingState({ ...state, tensors: new Map([...state.tensors].filter(([key]) => !key.startsWith("ema:"))) });
}
