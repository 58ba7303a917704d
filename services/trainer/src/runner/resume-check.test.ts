import { describe, expect, it } from "vitest";
import { Device, OptimizerKind, ScheduleKind, TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { resumeConflicts } from "./resume-check.js";

describe("resumeConflicts", () => {
  const saved = tinyTrainConfig();

  it("lets a resume train longer, at another LR and schedule, with other clipping, validation and publication", () => {
    const now = tinyTrainConfig({
      endEpoch: 30,
      optimizer: { kind: OptimizerKind.ADAM, lr: 1e-4 },
      schedule: { kind: ScheduleKind.COSINE },
      clipGradNorm: 5,
      validateEveryEpochs: 3,
      publish: { mode: 3, modelName: "other" },
    });
    expect(resumeConflicts(saved, now)).toEqual([]);
  });

  it("names a changed input size with both values, as the experiment file writes them", () => {
    const now = tinyTrainConfig({ model: { architecture: 1, inputSize: { width: 96, height: 128 }, extra: { case: "lite", value: { channels: [8, 16, 32] } } } });
    expect(resumeConflicts(saved, now)).toContain("MODEL.IMAGE_SIZE differs from its checkpoint ([48, 64] there, [96, 128] now)");
  });

  it("names every setting that shapes the saved state", () => {
    const now = tinyTrainConfig({
      model: { architecture: 1, inputSize: { width: 48, height: 64 }, extra: { case: "lite", value: { channels: [8, 16, 64] } } },
      optimizer: { kind: OptimizerKind.SGD, lr: 1e-3, momentum: 0.9 },
      batchSize: 4,
      replicas: 2,
    });
    expect(resumeConflicts(saved, now)).toEqual([
      'MODEL.EXTRA differs from its checkpoint ({"channels": [8, 16, 32], "blocksPerStage": 1} there, {"channels": [8, 16, 64], "blocksPerStage": 1} now)',
      "TRAIN.OPTIMIZER differs from its checkpoint (adam there, sgd now)",
      "TRAIN.BATCH_SIZE_PER_GPU differs from its checkpoint (8 there, 4 now)",
      "TRAIN.REPLICAS differs from its checkpoint (1 there, 2 now)",
    ]);
    const accumulating = tinyTrainConfig({ gradAccumSteps: 2, device: Device.CUDA, mixedPrecision: true });
    expect(resumeConflicts(saved, accumulating)).toEqual([
      "TRAIN.GRAD_ACCUM_STEPS differs from its checkpoint (1 there, 2 now)",
      "TRAIN.AMP differs from its checkpoint (false there, true now)",
    ]);
  });

  it("lets a job move between engines and devices, but not change its number of torchrun processes", () => {
    const saved = tinyTrainConfig({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, gpus: 4 });
    expect(resumeConflicts(saved, tinyTrainConfig({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, gpus: 2, nodes: 2, rdzvEndpoint: "head:29400" }))).toEqual([]);
    expect(resumeConflicts(tinyTrainConfig(), tinyTrainConfig({ engine: TrainingEngine.PYTORCH }))).toEqual([]);
    expect(resumeConflicts(saved, tinyTrainConfig({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, gpus: 2 }))).toEqual(["TRAIN.GPUS x TRAIN.NODES differs from its checkpoint (4 there, 2 now)"]);
  });

  it("lets SGD's momentum change but not appear or vanish (its buffer is saved state)", () => {
    const sgd = (momentum: number) => tinyTrainConfig({ optimizer: { kind: OptimizerKind.SGD, lr: 1e-3, momentum } });
    expect(resumeConflicts(sgd(0.9), sgd(0.8))).toEqual([]);
    expect(resumeConflicts(sgd(0.9), sgd(0))).toEqual(["TRAIN.MOMENTUM differs from its checkpoint (0.9 there, 0 now)"]);
  });
});
