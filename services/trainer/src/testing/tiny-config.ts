import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, OptimizerKind, PublishMode, ScheduleKind, TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { resolveTrainConfig } from "../experiment/validate.js";

/** A run small enough for tests: a lite 64x48 net on a few dozen synthetic images. */
export function tinyTrainConfig(overrides: MessageInitShape<typeof TrainConfigSchema> = {}): TrainConfig {
  const input = create(TrainConfigSchema, {
    name: "tiny",
    model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, extra: { case: "lite", value: { channels: [8, 16, 32] } } },
    data: { kind: DatasetKind.SYNTHETIC, synthetic: { trainImages: 40, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 2, seed: 5n }, name: "tiny" },
    optimizer: { kind: OptimizerKind.ADAM, lr: 1e-3 },
    schedule: { kind: ScheduleKind.MULTISTEP, lrSteps: [1], lrFactor: 0.5 },
    batchSize: 8,
    endEpoch: 2,
    seed: 3n,
    logEverySteps: 2,
    loaderWorkers: 0,
    intraOpThreads: 1,
    publish: { mode: PublishMode.BEST, modelName: "tiny" },
    quantization: { enabled: true, calibrationSamples: 16, maxApDrop: 100 },
    validation: { useGtBoxes: true },
  });
  // Each override replaces its whole field (converted through a message of its own).
  const converted = create(TrainConfigSchema, overrides);
  for (const key of Object.keys(overrides) as (keyof typeof overrides & keyof TrainConfig)[]) {
    (input as unknown as Record<string, unknown>)[key] = converted[key];
  }
  const { config, problems } = resolveTrainConfig(input);
  if (problems.length > 0) throw new Error(`tiny config: ${problems.join("; ")}`);
  return config;
}

/**
 * The experiment-file form of a tiny run (the lite net at 48x64 on 40 rendered images, two epochs by default),
 * for tests that start jobs from YAML as users do. No int8 gate and, unless `publish`, no publication.
 */
export function tinyExperimentYaml(options: { name: string; modelName?: string; endEpoch?: number; publish?: boolean }): string {
  return `NAME: ${options.name}
WORKERS: 1
DATASET:
  DATASET: synthetic
  SYNTHETIC:
    TRAIN_IMAGES: 40
    VAL_IMAGES: 8
    IMAGE_SIZE: [128, 96]
    MAX_PEOPLE: 2
MODEL:
  NAME: pose_lite
  IMAGE_SIZE: [48, 64]
  HEATMAP_SIZE: [12, 16]
  SIGMA: 2
  EXTRA:
    CHANNELS: [8, 16, 32]
TRAIN:
  OPTIMIZER: adam
  LR: 0.001
  BATCH_SIZE_PER_GPU: 8
  END_EPOCH: ${options.endEpoch ?? 2}
TEST:
  USE_GT_BBOX: true
  FLIP_TEST: false
QUANT:
  ENABLED: false
PUBLISH:
${options.publish === true ? "" : "  MODE: never\n"}  MODEL_NAME: ${options.modelName ?? options.name}
`;
}
