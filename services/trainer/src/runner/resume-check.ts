import { Architecture, OptimizerKind, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { modelConfigFromSpec } from "../experiment/model-config.js";

/** A setting as the experiment file names it, and how to read it from a config for comparison. */
interface StateSetting {
  readonly key: string;
  readonly read: (config: TrainConfig) => unknown;
  /** The value shown when it differs, where `read` compares less than the whole value. */
  readonly show?: (config: TrainConfig) => unknown;
  /** Only compared when this holds for both configs (a setting that shapes state for one optimizer only). */
  readonly when?: (config: TrainConfig) => boolean;
}

const ARCHITECTURES: Readonly<Record<number, string>> = { [Architecture.LITE]: "pose_lite", [Architecture.SIMPLE_BASELINE]: "pose_resnet", [Architecture.HRNET]: "pose_hrnet" };
const OPTIMIZERS: Readonly<Record<number, string>> = { [OptimizerKind.SGD]: "sgd", [OptimizerKind.ADAM]: "adam", [OptimizerKind.ADAMW]: "adamw" };

/** The zoo's own settings of the architecture (MODEL.EXTRA), without the head stride MODEL.HEATMAP_SIZE decides. */
function extra(config: TrainConfig): unknown {
  if (config.model === undefined) return undefined;
  try {
    const { lite, simpleBaseline, hrnet } = modelConfigFromSpec(config.model);
    const { heatmapStride: _stride, ...liteRest } = lite ?? {};
    return lite !== undefined ? liteRest : (simpleBaseline ?? hrnet);
  } catch {
    return undefined;
  }
}

/**
 * What a checkpoint's state is made of or counted in, so a resume cannot change it: the model (its weights'
 * names and shapes, and the input and heatmaps they were trained for), the optimizer's slots, the gradient
 * accumulators and the loss scaler, and the loader batch its position counts (a batch per replica). Everything
 * else (END_EPOCH, the LR and its schedule, clipping, augmentation, validation, publication) may change.
 * So may TRAIN.ENGINE, TRAIN.DEVICE and the PyTorch-only settings: both engines name and shape a checkpoint's
 * tensors and optimizer slots alike (PROTOCOL.md), so a job checkpointed on one engine or device continues on
 * another (a CPU run moved to a GPU trainer, or the reverse). The processes of a torchrun job (TRAIN.GPUS x
 * TRAIN.NODES) are replicas like TRAIN.REPLICAS: their number may not change, how they split over nodes may.
 */
const STATE_SETTINGS: readonly StateSetting[] = [
  { key: "MODEL.NAME", read: (c) => ARCHITECTURES[c.model?.architecture ?? 0] ?? c.model?.architecture },
  { key: "MODEL.IMAGE_SIZE", read: (c) => [c.model?.inputSize?.width ?? 0, c.model?.inputSize?.height ?? 0] },
  {
    key: "MODEL.HEATMAP_SIZE",
    read: (c) => {
      const kind = c.model?.codec?.kind;
      return kind?.case === "heatmap" ? [kind.value.width, kind.value.height] : kind?.case;
    },
  },
  { key: "MODEL.NUM_JOINTS", read: (c) => c.model?.keypointSchema?.keypointNames.length ?? 0 },
  { key: "MODEL.EXTRA", read: extra },
  { key: "TRAIN.OPTIMIZER", read: (c) => OPTIMIZERS[c.optimizer?.kind ?? 0] ?? c.optimizer?.kind },
  // SGD keeps a momentum buffer only with momentum; its value may change, its presence may not.
  { key: "TRAIN.MOMENTUM", read: (c) => (c.optimizer?.momentum ?? 0) > 0, show: (c) => c.optimizer?.momentum ?? 0, when: (c) => c.optimizer?.kind === OptimizerKind.SGD },
  { key: "TRAIN.BATCH_SIZE_PER_GPU", read: (c) => c.batchSize },
  { key: "TRAIN.REPLICAS", read: (c) => Math.max(1, c.replicas) },
  { key: "TRAIN.GPUS x TRAIN.NODES", read: (c) => Math.max(1, c.gpus) * Math.max(1, c.nodes) },
  { key: "TRAIN.GRAD_ACCUM_STEPS", read: (c) => Math.max(1, c.gradAccumSteps) },
  { key: "TRAIN.AMP", read: (c) => c.mixedPrecision },
];

/**
 * Why a checkpoint cannot continue under `config`: one line per setting that shapes its state and differs,
 * e.g. "MODEL.IMAGE_SIZE differs from its checkpoint ([128, 96] there, [256, 192] now)". Empty when it can.
 */
export function resumeConflicts(checkpointConfig: TrainConfig, config: TrainConfig): string[] {
  const conflicts: string[] = [];
  for (const setting of STATE_SETTINGS) {
    if (setting.when !== undefined && !(setting.when(checkpointConfig) && setting.when(config))) continue;
    if (JSON.stringify(setting.read(checkpointConfig)) === JSON.stringify(setting.read(config))) continue;
    const show = setting.show ?? setting.read;
    conflicts.push(`${setting.key} differs from its checkpoint (${shown(show(checkpointConfig))} there, ${shown(show(config))} now)`);
  }
  return conflicts;
}

/** A value as an experiment file would write it: pose_lite, [128, 96], {"channels": [8, 16, 32]}. */
function shown(value: unknown): string {
  if (typeof value === "string") return value;
  return (JSON.stringify(value) ?? "nothing").replace(/,(?=\S)/g, ", ").replace(/":/g, '": ');
}
