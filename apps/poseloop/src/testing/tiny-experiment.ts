/**
 * The lite net at 48x64 on 40 rendered images, publishing under `modelName`: two epochs take seconds on a CPU.
 * For tests that drive real services with the CLI.
 */
export function tinyExperiment(modelName: string, name = "cli-tiny"): string {
  return `NAME: ${name}
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
  END_EPOCH: 2
  LR_STEP: [1]
TEST:
  USE_GT_BBOX: true
  FLIP_TEST: false
QUANT:
  ENABLED: true
  CALIBRATION_SAMPLES: 16
  # A model this small has noisy AP; the gate is exercised, not its threshold.
  MAX_AP_DROP: 100
PUBLISH:
  MODEL_NAME: ${modelName}
`;
}
