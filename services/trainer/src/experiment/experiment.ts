import { stat } from "node:fs/promises";
import { posix } from "node:path";
import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { CodecSchema, HeatmapCodecSchema, HeatmapRefinement, ModelRefSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { CocoDatasetSchema, DatasetKind, SyntheticDatasetSchema } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, BlockType, Calibrator, CheckpointRefSchema, DataLoaderPlace, DetectorLiteSpecSchema, Device, DistillationLoss, DistillationSpecSchema, EmaSpecSchema, FuseMethod, HrnetSpecSchema, HrnetStageSchema, ImageSizeSchema, InitFromSchema, LiteSpecSchema, OptimizerKind, PublishMode, ScheduleKind, SimpleBaselineSpecSchema, TrainConfigSchema, TrainingEngine, type HrnetStage, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { isAlias, isCollection, isMap, isPair, isScalar, LineCounter, parseDocument } from "yaml";
import { datasetProblems, resolveUnder } from "../datasets/data-root.js";
import { resolveTrainConfig } from "./validate.js";

// ---------------------------------------------------------------------------------------------------------
// The experiment-file vocabulary: every key the trainer understands, what its value must be, nothing else.

type Read = (value: unknown) => { readonly value: unknown } | { readonly error: string };
interface Section {
  readonly [key: string]: Node;
}
type Node = Read | Section;

/** A value as the file spells it, short enough for a message. */
function describe(value: unknown): string {
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value) ?? typeof value;
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function leaf(expected: string, accept: (value: unknown) => boolean): Read {
  return (value) => (accept(value) ? { value } : { error: `expected ${expected}, got ${describe(value)}` });
}

const isUint = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
const isPositiveInt = (value: unknown): value is number => isUint(value) && value > 0;
const isNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

const number = leaf("a number", isNumber);
// Where TrainConfig reads 0 as "the default", an explicit 0 in a file would silently mean something else.
const positiveNumber = leaf("a number > 0", (v) => isNumber(v) && v > 0);
const uint = leaf("a non-negative integer", isUint);
const positiveInt = leaf("a positive integer", isPositiveInt);
const boolean = leaf("true or false", (v) => typeof v === "boolean");
const string = leaf("a string", (v) => typeof v === "string");
const strings = leaf("a list of strings", (v) => Array.isArray(v) && v.every((item) => typeof item === "string"));
const uints = leaf("a list of non-negative integers", (v) => Array.isArray(v) && v.every(isUint));
const positiveInts = leaf("a list of positive integers", (v) => Array.isArray(v) && v.every(isPositiveInt));
const size = leaf("[width, height] in pixels", (v) => Array.isArray(v) && v.length === 2 && v.every(isPositiveInt));
const gpus = leaf("a GPU id or a list of them", (v) => typeof v === "string" || isUint(v) || (Array.isArray(v) && v.every(isUint)));
/**
 * TRAIN.DEVICE: cpu, cuda, cuda:N or webgpu, read as the Device and the GPU index. A bad index gets its own
 * message: "cuda:-1" is a typo of a GPU, not of a device name.
 */
const device: Read = (value) => {
  const expected = `expected one of cpu, cuda, cuda:N, webgpu, got ${describe(value)}`;
  if (typeof value !== "string") return { error: expected };
  const text = value.trim().toLowerCase();
  if (text === "cpu") return { value: { device: Device.CPU, index: 0 } };
  if (text === "cuda") return { value: { device: Device.CUDA, index: 0 } };
  if (text === "webgpu") return { value: { device: Device.WEBGPU, index: 0 } };
  if (text.startsWith("cuda:")) {
    const index = text.slice("cuda:".length);
    if (!/^\d{1,4}$/.test(index)) return { error: `${value}: the GPU index after cuda: must be a non-negative integer (cuda:0, cuda:1, ...)` };
    return { value: { device: Device.CUDA, index: Number(index) } };
  }
  return { error: expected };
};
/** TRAIN.RDZV_ENDPOINT: torchrun's rendezvous, host:port. */
const endpoint = leaf("host:port (torchrun's rendezvous endpoint)", (v) => typeof v === "string" && /^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$/.test(v));
/** CUDNN.*: settings of a library PoseLoop does not use; accepted whole, as documentation of the source recipe. */
const anything: Read = (value) => ({ value });

/** One of the named values (matched without regard to case), read as what it maps to. */
function oneOf<T>(names: Readonly<Record<string, T>>): Read {
  const byName = new Map(Object.entries(names).map(([name, value]) => [name.toLowerCase(), value]));
  const expected = `one of ${Object.keys(names).join(", ")}`;
  return (value) => {
    const mapped = typeof value === "string" ? byName.get(value.toLowerCase()) : undefined;
    return mapped === undefined ? { error: `expected ${expected}, got ${describe(value)}` } : { value: mapped };
  };
}

/** A reference key that PoseLoop honours with one value only. */
function only(read: Read, wanted: unknown, why: string): Read {
  return (value) => {
    const result = read(value);
    if ("error" in result || result.value === wanted) return result;
    return { error: `must be ${describe(wanted)} (${why}), got ${describe(value)}` };
  };
}

const STAGE: Section = {
  NUM_MODULES: positiveInt,
  NUM_BRANCHES: positiveInt,
  BLOCK: oneOf({ BASIC: BlockType.BASIC, BOTTLENECK: BlockType.BOTTLENECK }),
  NUM_BLOCKS: positiveInts,
  NUM_CHANNELS: positiveInts,
  FUSE_METHOD: oneOf({ SUM: FuseMethod.SUM }),
};

const SCHEMA: Section = {
  NAME: string,
  AUTO_RESUME: boolean,
  GPUS: gpus,
  WORKERS: positiveInt,
  PRINT_FREQ: positiveInt,
  OUTPUT_DIR: string,
  LOG_DIR: string,
  DATA_DIR: string,
  CUDNN: anything,
  DATASET: {
    DATASET: oneOf({ coco: DatasetKind.COCO, synthetic: DatasetKind.SYNTHETIC }),
    ROOT: string,
    TRAIN_SET: string,
    TEST_SET: string,
    FLIP: boolean,
    ROT_FACTOR: number,
    SCALE_FACTOR: number,
    PROB_HALF_BODY: number,
    NUM_JOINTS_HALF_BODY: positiveInt,
    COLOR_RGB: only(boolean, true, "images are decoded as RGB, the order the models are normalized in"),
    DATA_FORMAT: oneOf({ jpg: "jpg", png: "png" }),
    SYNTHETIC: {
      TRAIN_IMAGES: uint,
      VAL_IMAGES: uint,
      IMAGE_SIZE: size,
      MAX_PEOPLE: positiveInt,
      OCCLUSION: number,
      SEED: uint,
    },
    VAL_FRACTION: number,
    MIN_KEYPOINTS: positiveInt,
    DISK_CACHE: boolean,
    NAME: string,
  },
  MODEL: {
    NAME: oneOf({ pose_hrnet: Architecture.HRNET, pose_resnet: Architecture.SIMPLE_BASELINE, pose_lite: Architecture.LITE, detector_lite: Architecture.DETECTOR_LITE }),
    IMAGE_SIZE: size,
    HEATMAP_SIZE: size,
    SIGMA: positiveNumber,
    NUM_JOINTS: only(positiveInt, 17, "experiment files train the COCO-17 keypoint schema"),
    TARGET_TYPE: oneOf({ gaussian: "gaussian" }),
    INIT_WEIGHTS: boolean,
    // Ours: a PyTorch state_dict (.pth / .pt) under the trainer's data root; nothing is downloaded.
    PRETRAINED: string,
    EXTRA: {
      STAGE1: STAGE,
      STAGE2: STAGE,
      STAGE3: STAGE,
      STAGE4: STAGE,
      FINAL_CONV_KERNEL: leaf("1 or 3", (v) => v === 1 || v === 3),
      PRETRAINED_LAYERS: strings,
      NUM_LAYERS: positiveInt,
      NUM_DECONV_LAYERS: only(positiveInt, 3, "the SimpleBaseline head has three deconvolutions"),
      NUM_DECONV_FILTERS: positiveInts,
      NUM_DECONV_KERNELS: positiveInts,
      DECONV_WITH_BIAS: boolean,
      CHANNELS: positiveInts,
      BLOCKS_PER_STAGE: positiveInt,
      // The detector's head branches' width (CenterNet's head_conv).
      HEAD_CHANNELS: positiveInt,
    },
  },
  LOSS: {
    USE_TARGET_WEIGHT: only(boolean, true, "unlabelled keypoints never contribute to the loss"),
  },
  TRAIN: {
    LR: number,
    LR_FACTOR: positiveNumber,
    LR_STEP: uints,
    OPTIMIZER: oneOf({ sgd: OptimizerKind.SGD, adam: OptimizerKind.ADAM, adamw: OptimizerKind.ADAMW }),
    MOMENTUM: number,
    WD: number,
    NESTEROV: boolean,
    // The reference files write GAMMA2: 0.0, which their Adam never reads; 0 keeps TrainConfig's default.
    GAMMA1: number,
    GAMMA2: number,
    BEGIN_EPOCH: uint,
    END_EPOCH: uint,
    BATCH_SIZE_PER_GPU: uint,
    SHUFFLE: only(boolean, true, "training samples are always shuffled, from the seed"),
    RESUME: boolean,
    CHECKPOINT: only(string, "", "to start from a checkpoint, name it with INIT_FROM.JOB_ID and INIT_FROM.CHECKPOINT_ID"),
    GRAD_ACCUM_STEPS: positiveInt,
    CLIP_GRAD: number,
    AMP: boolean,
    SEED: uint,
    LR_SCHEDULE: oneOf({ multistep: ScheduleKind.MULTISTEP, cosine: ScheduleKind.COSINE, constant: ScheduleKind.CONSTANT }),
    MIN_LR: number,
    WARMUP_STEPS: uint,
    WARMUP_FACTOR: positiveNumber,
    VALIDATE_EVERY: positiveInt,
    LOG_EVERY: positiveInt,
    OCCLUSION_PROB: number,
    COLOR_JITTER: number,
    INTRA_OP_THREADS: uint,
    // Ours: data-parallel replicas on this node (BATCH_SIZE_PER_GPU samples each; see TrainConfig.replicas).
    REPLICAS: positiveInt,
    DEVICE: device,
    // Ours: the engine that runs the step, and the PyTorch engine's distributed and memory-format settings.
    ENGINE: oneOf({ onnxruntime: TrainingEngine.ONNXRUNTIME, pytorch: TrainingEngine.PYTORCH }),
    GPUS: positiveInt,
    NODES: positiveInt,
    RDZV_ENDPOINT: endpoint,
    SYNC_BN: boolean,
    CHANNELS_LAST: boolean,
    // Ours: where batches are built, the trainer's loader or the PyTorch engine's (TrainConfig.data_loader).
    DATA_LOADER: oneOf({ trainer: DataLoaderPlace.TRAINER, engine: DataLoaderPlace.ENGINE }),
    // Ours: a moving average of the weights for validation and export (MMPose's and Ultralytics' EMA). Any key
    // turns it on; ENABLED: false turns it off again (for --set overrides).
    EMA: {
      ENABLED: boolean,
      DECAY: leaf("a number in (0, 1)", (v) => isNumber(v) && v > 0 && v < 1),
      WARMUP: uint,
    },
  },
  TEST: {
    FLIP_TEST: boolean,
    USE_GT_BBOX: boolean,
    OKS_THRE: number,
    IN_VIS_THRE: number,
    BATCH_SIZE_PER_GPU: positiveInt,
    MODEL_FILE: only(string, "", "a run validates the weights it trains"),
    COCO_BBOX_FILE: string,
    POST_PROCESS: boolean,
    // Ours: how a heatmap maximum is refined below a pixel. dark also trains on Gaussians centred at the exact
    // sub-pixel position (DarkPose); POST_PROCESS true is quarter_offset, false is none.
    REFINEMENT: oneOf({ none: HeatmapRefinement.NONE, quarter_offset: HeatmapRefinement.QUARTER_OFFSET, dark: HeatmapRefinement.DARK }),
    SHIFT_HEATMAP: only(boolean, true, "the MSRA heatmap codec's flip test shifts the mirrored heatmaps one pixel, as the reference does"),
    // The reference reads BBOX_THRE and NMS_THRE nowhere (its person boxes come filtered by IMAGE_THRE).
    BBOX_THRE: only(number, 1, "the reference reads it nowhere, nor does PoseLoop"),
    IMAGE_THRE: number,
    NMS_THRE: only(number, 1, "the reference reads it nowhere, nor does PoseLoop"),
    SOFT_NMS: only(boolean, false, "validation suppresses duplicates with hard OKS-NMS at TEST.OKS_THRE"),
    MAX_IMAGES: uint,
  },
  PUBLISH: {
    MODE: oneOf({ best: PublishMode.BEST, every_epoch: PublishMode.EVERY_EPOCH, final: PublishMode.FINAL, never: PublishMode.NEVER }),
    MODEL_NAME: string,
    SKIP_PROMOTION: boolean,
  },
  QUANT: {
    ENABLED: boolean,
    CALIBRATOR: oneOf({ minmax: Calibrator.MINMAX, percentile: Calibrator.PERCENTILE, entropy: Calibrator.ENTROPY }),
    PERCENTILE: positiveNumber,
    CALIBRATION_SAMPLES: positiveInt,
    MAX_AP_DROP: positiveNumber,
    FP32_NODES: strings,
    FULL_RANGE_WEIGHTS: boolean,
  },
  CHECKPOINT: {
    EVERY_MINUTES: uint,
    KEEP_LAST: positiveInt,
  },
  DISTILL: {
    TEACHER_MODEL: string,
    TEACHER_VERSION: string,
    WEIGHT: number,
    LOSS: oneOf({ mse: DistillationLoss.MSE, kl: DistillationLoss.KL }),
    TEMPERATURE: positiveNumber,
  },
  INIT_FROM: {
    MODEL: string,
    VERSION: string,
    JOB_ID: string,
    CHECKPOINT_ID: string,
    SKIP_LAYERS: strings,
  },
};

/** MODEL.EXTRA keys by the architecture they configure. */
const EXTRA_KEYS: Readonly<Record<string, readonly Architecture[]>> = {
  STAGE1: [Architecture.HRNET],
  STAGE2: [Architecture.HRNET],
  STAGE3: [Architecture.HRNET],
  STAGE4: [Architecture.HRNET],
  PRETRAINED_LAYERS: [Architecture.HRNET],
  FINAL_CONV_KERNEL: [Architecture.HRNET, Architecture.SIMPLE_BASELINE],
  NUM_LAYERS: [Architecture.SIMPLE_BASELINE],
  NUM_DECONV_LAYERS: [Architecture.SIMPLE_BASELINE],
  NUM_DECONV_FILTERS: [Architecture.SIMPLE_BASELINE],
  NUM_DECONV_KERNELS: [Architecture.SIMPLE_BASELINE],
  DECONV_WITH_BIAS: [Architecture.SIMPLE_BASELINE],
  CHANNELS: [Architecture.LITE, Architecture.DETECTOR_LITE],
  BLOCKS_PER_STAGE: [Architecture.LITE, Architecture.DETECTOR_LITE],
  HEAD_CHANNELS: [Architecture.DETECTOR_LITE],
};
/**
 * Keys that configure keypoints (their targets, augmentation, decoding, validation on person boxes, a pose
 * teacher): a detector trains on whole pictures and is measured by box AP, so each is a mistake there.
 */
const POSE_ONLY_KEYS: readonly string[] = [
  "MODEL.HEATMAP_SIZE",
  "MODEL.SIGMA",
  "MODEL.TARGET_TYPE",
  "MODEL.NUM_JOINTS",
  "MODEL.PRETRAINED",
  "DATASET.ROT_FACTOR",
  "DATASET.PROB_HALF_BODY",
  "DATASET.NUM_JOINTS_HALF_BODY",
  "DATASET.MIN_KEYPOINTS",
  "TRAIN.OCCLUSION_PROB",
  "TRAIN.COLOR_JITTER",
  "TEST.FLIP_TEST",
  "TEST.POST_PROCESS",
  "TEST.REFINEMENT",
  "TEST.USE_GT_BBOX",
  "TEST.OKS_THRE",
  "TEST.IN_VIS_THRE",
  "TEST.COCO_BBOX_FILE",
  "TEST.IMAGE_THRE",
  "DISTILL",
];
const MODEL_NAMES: Readonly<Record<number, string>> = {
  [Architecture.HRNET]: "pose_hrnet",
  [Architecture.SIMPLE_BASELINE]: "pose_resnet",
  [Architecture.LITE]: "pose_lite",
  [Architecture.DETECTOR_LITE]: "detector_lite",
};

function isSection(node: Node): node is Section {
  return typeof node !== "function";
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Every dotted key of the vocabulary, for suggestions across sections. */
const ALL_KEYS: readonly string[] = (function collect(section: Section, prefix: string): string[] {
  return Object.entries(section).flatMap(([key, node]) => [`${prefix}${key}`, ...(isSection(node) ? collect(node, `${prefix}${key}.`) : [])]);
})(SCHEMA, "");

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] as number;
}

/** "TRAIN.LRR: unknown key (did you mean TRAIN.LR?)": the nearest sibling, or the same key in another section. */
function unknownKey(path: readonly string[], section: Section): string {
  const key = (path.at(-1) ?? "").toUpperCase();
  const prefix = path.slice(0, -1);
  let best: { key: string; distance: number } | undefined;
  for (const candidate of Object.keys(section)) {
    const distance = editDistance(key, candidate);
    if (best === undefined || distance < best.distance) best = { key: candidate, distance };
  }
  let suggestion: string | undefined;
  if (best !== undefined && best.distance <= Math.max(1, Math.floor(best.key.length / 3))) suggestion = [...prefix, best.key].join(".");
  else {
    const elsewhere = ALL_KEYS.filter((candidate) => candidate.split(".").at(-1) === key).sort((a, b) => a.split(".").length - b.split(".").length);
    if (elsewhere.length > 0) suggestion = elsewhere.join(" or ");
  }
  return `${path.join(".")}: unknown key${suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`}`;
}

// ---------------------------------------------------------------------------------------------------------
// Reading a file: YAML → checked values by dotted key → TrainConfig.

interface Conversion {
  /** Undefined when the text is not a YAML mapping at all. */
  readonly config: TrainConfig | undefined;
  readonly problems: string[];
}

/** Checks `tree` against the vocabulary; returns the value of every well-typed leaf by dotted key. */
function readTree(tree: Record<string, unknown>, problems: string[]): Map<string, unknown> {
  const values = new Map<string, unknown>();
  const walk = (section: Section, mapping: Record<string, unknown>, path: readonly string[]) => {
    for (const [key, value] of Object.entries(mapping)) {
      const keyPath = [...path, key];
      const dotted = keyPath.join(".");
      const node = section[key];
      if (node === undefined) {
        problems.push(unknownKey(keyPath, section));
      } else if (isSection(node)) {
        // `KEY:` with nothing under it is an empty section.
        if (value === null) continue;
        if (isMapping(value)) walk(node, value, keyPath);
        else problems.push(`${dotted}: expected a mapping of ${Object.keys(node).slice(0, 3).join(", ")}, ..., got ${describe(value)}`);
      } else {
        const result = node(value);
        if ("error" in result) problems.push(`${dotted}: ${result.error}`);
        else values.set(dotted, result.value);
      }
    }
  };
  walk(SCHEMA, tree, []);
  return values;
}

/** Applies `KEY.PATH=value` overrides to the parsed tree, each value read with YAML's scalar rules. */
function applyOverrides(tree: Record<string, unknown>, overrides: Readonly<Record<string, string>>, problems: string[]): void {
  for (const [key, text] of Object.entries(overrides)) {
    const path = key.split(".");
    let node: Node = SCHEMA;
    let known = true;
    for (let i = 0; i < path.length; i++) {
      if (!isSection(node)) {
        // Only CUDNN accepts anything beneath it.
        known = node === anything;
        if (!known) problems.push(`override ${key}: unknown key (${path.slice(0, i).join(".")} takes a value, not keys)`);
        break;
      }
      const child: Node | undefined = node[path[i] as string];
      if (child === undefined) {
        problems.push(`override ${unknownKey(path.slice(0, i + 1), node)}`);
        known = false;
        break;
      }
      node = child;
    }
    if (!known) continue;
    // An empty value is the empty string (PRETRAINED=), not YAML's null.
    let value: unknown = "";
    if (text.trim().length > 0) {
      const parsed = parseYaml(text, `override ${key}`);
      if ("problem" in parsed) {
        problems.push(parsed.problem);
        continue;
      }
      const doc = parsed.doc;
      if (doc.errors.length > 0) {
        problems.push(`override ${key}: ${firstLine(doc.errors[0]?.message ?? "invalid YAML")}`);
        continue;
      }
      const structure = structureProblems(doc.contents, parsed.lines, `override ${key}`);
      const converted = structure.length > 0 ? undefined : toValue(doc, `override ${key}`);
      if (converted === undefined || "problem" in converted) {
        problems.push(...structure, ...(converted === undefined ? [] : [converted.problem]));
        continue;
      }
      value = converted.value;
    }
    let cursor = tree;
    let blocked: string | undefined;
    for (const [i, segment] of path.slice(0, -1).entries()) {
      const next = cursor[segment];
      if (next === undefined || next === null) cursor[segment] = {};
      else if (!isMapping(next)) {
        blocked = path.slice(0, i + 1).join(".");
        break;
      }
      cursor = cursor[segment] as Record<string, unknown>;
    }
    if (blocked !== undefined) problems.push(`override ${key}: ${blocked} in the experiment is not a mapping`);
    else cursor[path.at(-1) as string] = value;
  }
}

function firstLine(text: string): string {
  return text.split("\n", 1)[0] ?? text;
}

/**
 * What an experiment file (and its overrides) may be. Real files are a few KiB, nest 5 levels and use no
 * aliases; past these limits YAML's cost grows faster than the text (1 MB took 15 s), and a few lines of
 * aliases expand into gigabytes.
 */
export const EXPERIMENT_LIMITS = {
  maxBytes: 256 * 1024,
  maxDepth: 32,
  maxAliasCount: 100,
  maxOverrides: 256,
  maxOverrideBytes: 4096,
} as const;

/** The deepest nesting of mappings and sequences under `root`, counted without recursion (or up to `limit` + 1). */
function nestingDepth(root: unknown, limit: number): number {
  let deepest = 0;
  const stack: { node: unknown; depth: number }[] = [{ node: root, depth: 0 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop() as { node: unknown; depth: number };
    if (isPair(node)) {
      stack.push({ node: node.key, depth }, { node: node.value, depth });
    } else if (isCollection(node)) {
      deepest = Math.max(deepest, depth + 1);
      if (deepest > limit) return deepest;
      for (const item of node.items as unknown[]) stack.push({ node: item, depth: depth + 1 });
    }
  }
  return deepest;
}

function countAliases(root: unknown): number {
  let count = 0;
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isAlias(node)) count++;
    else if (isPair(node)) stack.push(node.key, node.value);
    else if (isCollection(node)) for (const item of node.items as unknown[]) stack.push(item);
  }
  return count;
}

/**
 * Keys given twice in one mapping. YAML's own check compares every key with every other one (a 256 KiB mapping
 * took seconds); this one is linear.
 */
function duplicateKeys(root: unknown, lines: LineCounter, where: string): string[] {
  const problems: string[] = [];
  const stack: unknown[] = [root];
  while (stack.length > 0 && problems.length < 100) {
    const node = stack.pop();
    if (isPair(node)) stack.push(node.value);
    else if (isCollection(node)) {
      const seen = new Set<string>();
      for (const item of node.items as unknown[]) {
        stack.push(item);
        if (!isMap(node) || !isPair(item) || !isScalar(item.key)) continue;
        const key = String(item.key.value);
        if (!seen.has(key)) seen.add(key);
        else {
          const at = item.key.range === undefined || item.key.range === null ? "" : ` at line ${lines.linePos(item.key.range[0]).line}`;
          problems.push(`${where}: ${key.length > 60 ? `${key.slice(0, 57)}...` : key} is given twice in one mapping${at}`);
        }
      }
    }
  }
  return problems;
}

/** The size limits of an experiment file and its overrides, each broken one as a problem naming it. */
function limitProblems(yamlText: string, overrides: Readonly<Record<string, string>>): string[] {
  const problems: string[] = [];
  const bytes = Buffer.byteLength(yamlText, "utf8");
  if (bytes > EXPERIMENT_LIMITS.maxBytes) problems.push(`the experiment file is ${bytes} bytes; the limit is ${EXPERIMENT_LIMITS.maxBytes} bytes (256 KiB)`);
  const entries = Object.entries(overrides);
  if (entries.length > EXPERIMENT_LIMITS.maxOverrides) problems.push(`${entries.length} overrides; the limit is ${EXPERIMENT_LIMITS.maxOverrides}`);
  for (const [key, value] of entries.slice(0, EXPERIMENT_LIMITS.maxOverrides)) {
    const size = Buffer.byteLength(key, "utf8") + Buffer.byteLength(value, "utf8");
    if (size > EXPERIMENT_LIMITS.maxOverrideBytes) problems.push(`override ${key.slice(0, 60)}: ${size} bytes; the limit is ${EXPERIMENT_LIMITS.maxOverrideBytes} bytes per override`);
  }
  return problems;
}

/** Structure limits of a parsed document: nesting depth and aliases (before anything expands them). */
function structureProblems(contents: unknown, lines: LineCounter, where: string): string[] {
  const depth = nestingDepth(contents, EXPERIMENT_LIMITS.maxDepth);
  if (depth > EXPERIMENT_LIMITS.maxDepth) return [`${where}: nesting deeper than ${EXPERIMENT_LIMITS.maxDepth} levels (the limit on nesting depth)`];
  const aliases = countAliases(contents);
  if (aliases > EXPERIMENT_LIMITS.maxAliasCount) return [`${where}: ${aliases} aliases; the limit is ${EXPERIMENT_LIMITS.maxAliasCount} aliases`];
  return duplicateKeys(contents, lines, where);
}

/**
 * The document's value, or a problem: an alias bomb (a few aliases that expand exponentially) passes the
 * alias count and is stopped by YAML's own maxAliasCount, which counts expanded nodes.
 */
function toValue(doc: ReturnType<typeof parseDocument>, where: string): { value: unknown } | { problem: string } {
  try {
    return { value: doc.toJS({ maxAliasCount: EXPERIMENT_LIMITS.maxAliasCount }) as unknown };
  } catch (error) {
    if (error instanceof ReferenceError && /alias/i.test(error.message)) {
      return { problem: `${where}: aliases expand past the limit of ${EXPERIMENT_LIMITS.maxAliasCount} alias expansions (maxAliasCount)` };
    }
    if (error instanceof ReferenceError) return { problem: `${where}: ${firstLine(error.message)}` };
    throw error;
  }
}

/** parseDocument, with a parser that runs out of stack (brackets nested thousands deep) as a problem. */
function parseYaml(text: string, where: string): { doc: ReturnType<typeof parseDocument>; lines: LineCounter } | { problem: string } {
  try {
    const lines = new LineCounter();
    // Duplicate keys are found by duplicateKeys, in linear time.
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: false, lineCounter: lines });
    // The composer recurses per level; brackets nested thousands deep run it out of stack at every level.
    if (doc.errors.some((error) => error.message.includes("Maximum call stack size exceeded"))) {
      return { problem: `${where}: nesting deeper than ${EXPERIMENT_LIMITS.maxDepth} levels (the limit on nesting depth)` };
    }
    return { doc, lines };
  } catch (error) {
    if (error instanceof RangeError) return { problem: `${where}: nesting deeper than ${EXPERIMENT_LIMITS.maxDepth} levels (the limit on nesting depth)` };
    throw error;
  }
}

function convert(yamlText: string, overrides: Readonly<Record<string, string>>): Conversion {
  const problems: string[] = limitProblems(yamlText, overrides);
  if (problems.length > 0) return { config: undefined, problems };
  const parsed = parseYaml(yamlText, "YAML");
  if ("problem" in parsed) return { config: undefined, problems: [parsed.problem] };
  const doc = parsed.doc;
  if (doc.errors.length > 0) {
    for (const error of doc.errors) problems.push(`YAML: ${firstLine(error.message)}`);
    return { config: undefined, problems };
  }
  problems.push(...structureProblems(doc.contents, parsed.lines, "YAML"));
  if (problems.length > 0) return { config: undefined, problems };
  const converted = toValue(doc, "YAML");
  if ("problem" in converted) return { config: undefined, problems: [converted.problem] };
  const tree = converted.value;
  if (tree !== null && tree !== undefined && !isMapping(tree)) {
    problems.push(`an experiment must be a YAML mapping of sections (TRAIN, MODEL, ...), got ${describe(tree)}`);
    return { config: undefined, problems };
  }
  const root: Record<string, unknown> = tree ?? {};
  applyOverrides(root, overrides, problems);
  const values = readTree(root, problems);
  return { config: buildConfig(values, problems), problems };
}

/** Builds the TrainConfig from checked values; keys absent stay at zero (TrainConfig's "default"). */
function buildConfig(values: ReadonlyMap<string, unknown>, problems: string[]): TrainConfig {
  const config = create(TrainConfigSchema, {
    model: {},
    data: {},
    optimizer: {},
    schedule: {},
    augmentation: {},
    quantization: {},
    publish: {},
    checkpoint: {},
    validation: {},
  });
  const model = config.model!;
  const data = config.data!;
  const optimizer = config.optimizer!;
  const schedule = config.schedule!;
  const augmentation = config.augmentation!;
  const quantization = config.quantization!;
  const publish = config.publish!;
  const checkpoint = config.checkpoint!;
  const validation = config.validation!;
  const take = <T>(key: string, apply: (value: T) => void): void => {
    if (values.has(key)) apply(values.get(key) as T);
  };
  const present = (prefix: string): string[] => [...values.keys()].filter((key) => key === prefix || key.startsWith(`${prefix}.`));

  take("NAME", (v: string) => (config.name = v));
  take("WORKERS", (v: number) => (config.loaderWorkers = v));
  take("PRINT_FREQ", (v: number) => (config.logEverySteps = v));
  take("TRAIN.LOG_EVERY", (v: number) => {
    const printFreq = values.get("PRINT_FREQ");
    if (printFreq !== undefined && printFreq !== v) problems.push(`TRAIN.LOG_EVERY: ${v} contradicts PRINT_FREQ ${describe(printFreq)}; set one of them`);
    config.logEverySteps = v;
  });

  // DATASET
  const kind = values.get("DATASET.DATASET") as DatasetKind | undefined;
  if (kind !== undefined) data.kind = kind;
  const cocoKeys = ["DATASET.ROOT", "DATASET.TRAIN_SET", "DATASET.TEST_SET", "TEST.COCO_BBOX_FILE"].filter((key) => values.has(key));
  if (kind === DatasetKind.COCO) {
    const coco = (data.coco = create(CocoDatasetSchema));
    take("DATASET.ROOT", (root: string) => {
      // The reference joins DATA_DIR and DATASET.ROOT the same way.
      const dir = values.get("DATA_DIR") as string | undefined;
      coco.root = dir === undefined || dir.length === 0 ? root : posix.join(dir, root);
    });
    take("DATASET.TRAIN_SET", (split: string) => {
      coco.trainAnnotations = `annotations/person_keypoints_${split}.json`;
      coco.trainImages = split;
    });
    take("DATASET.TEST_SET", (split: string) => {
      coco.valAnnotations = `annotations/person_keypoints_${split}.json`;
      coco.valImages = split;
    });
    take("TEST.COCO_BBOX_FILE", (file: string) => (coco.valDetections = file));
  } else if (kind === DatasetKind.SYNTHETIC) {
    for (const key of cocoKeys) problems.push(`${key}: only for DATASET.DATASET coco`);
  }
  const syntheticKeys = present("DATASET.SYNTHETIC");
  if (kind === DatasetKind.SYNTHETIC) {
    const synthetic = (data.synthetic = create(SyntheticDatasetSchema));
    take("DATASET.SYNTHETIC.TRAIN_IMAGES", (v: number) => (synthetic.trainImages = v));
    take("DATASET.SYNTHETIC.VAL_IMAGES", (v: number) => (synthetic.valImages = v));
    take("DATASET.SYNTHETIC.IMAGE_SIZE", ([width, height]: [number, number]) => {
      synthetic.imageWidth = width;
      synthetic.imageHeight = height;
    });
    take("DATASET.SYNTHETIC.MAX_PEOPLE", (v: number) => (synthetic.maxPeople = v));
    take("DATASET.SYNTHETIC.OCCLUSION", (v: number) => (synthetic.occlusion = v));
    take("DATASET.SYNTHETIC.SEED", (v: number) => (synthetic.seed = BigInt(v)));
  } else if (kind === DatasetKind.COCO && syntheticKeys.length > 0) {
    problems.push(`DATASET.SYNTHETIC: only for DATASET.DATASET synthetic`);
  }
  take("DATASET.VAL_FRACTION", (v: number) => (data.valFraction = v));
  take("DATASET.MIN_KEYPOINTS", (v: number) => (data.minKeypoints = v));
  take("DATASET.DISK_CACHE", (v: boolean) => (data.diskCache = v));
  take("DATASET.NAME", (v: string) => (data.name = v));
  take("DATASET.FLIP", (v: boolean) => (augmentation.flip = v));
  take("DATASET.ROT_FACTOR", (v: number) => (augmentation.rotationFactor = v));
  take("DATASET.SCALE_FACTOR", (v: number) => (augmentation.scaleFactor = v));
  take("DATASET.PROB_HALF_BODY", (v: number) => (augmentation.halfBodyProb = v));
  take("DATASET.NUM_JOINTS_HALF_BODY", (v: number) => (augmentation.halfBodyMinKeypoints = v));
  take("TRAIN.OCCLUSION_PROB", (v: number) => (augmentation.occlusionProb = v));
  take("TRAIN.COLOR_JITTER", (v: number) => (augmentation.colorJitter = v));

  // MODEL
  const architecture = values.get("MODEL.NAME") as Architecture | undefined;
  if (architecture !== undefined) model.architecture = architecture;
  take("MODEL.PRETRAINED", (v: string) => (model.pretrained = v));
  take("MODEL.IMAGE_SIZE", ([width, height]: [number, number]) => (model.inputSize = create(ImageSizeSchema, { width, height })));
  if (values.has("MODEL.HEATMAP_SIZE") || values.has("MODEL.SIGMA") || values.has("TEST.POST_PROCESS") || values.has("TEST.REFINEMENT")) {
    const heatmap = create(HeatmapCodecSchema);
    take("MODEL.HEATMAP_SIZE", ([width, height]: [number, number]) => {
      heatmap.width = width;
      heatmap.height = height;
    });
    take("MODEL.SIGMA", (v: number) => (heatmap.sigma = v));
    // POST_PROCESS is the reference's quarter-pixel shift toward the higher neighbour.
    take("TEST.POST_PROCESS", (v: boolean) => (heatmap.refinement = v ? HeatmapRefinement.QUARTER_OFFSET : HeatmapRefinement.NONE));
    if (values.has("TEST.POST_PROCESS") && values.has("TEST.REFINEMENT")) problems.push("TEST.POST_PROCESS and TEST.REFINEMENT both choose the heatmap refinement: give one");
    take("TEST.REFINEMENT", (v: HeatmapRefinement) => (heatmap.refinement = v));
    model.codec = create(CodecSchema, { kind: { case: "heatmap", value: heatmap } });
  }
  const extraKeys = new Set(present("MODEL.EXTRA").map((key) => key.split(".")[2] as string));
  if (architecture !== undefined) {
    for (const key of extraKeys) {
      const owners = EXTRA_KEYS[key] ?? [];
      if (!owners.includes(architecture)) problems.push(`MODEL.EXTRA.${key}: only for MODEL.NAME ${owners.map((a) => MODEL_NAMES[a]).join(" or ")}`);
    }
  }
  switch (architecture) {
    case Architecture.LITE: {
      const lite = create(LiteSpecSchema);
      take("MODEL.EXTRA.CHANNELS", (v: number[]) => (lite.channels = v));
      take("MODEL.EXTRA.BLOCKS_PER_STAGE", (v: number) => (lite.blocksPerStage = v));
      model.extra = { case: "lite", value: lite };
      break;
    }
    case Architecture.SIMPLE_BASELINE: {
      const sb = create(SimpleBaselineSpecSchema);
      take("MODEL.EXTRA.NUM_LAYERS", (v: number) => (sb.resnetDepth = v));
      take("MODEL.EXTRA.NUM_DECONV_FILTERS", (v: number[]) => (sb.deconvFilters = v));
      take("MODEL.EXTRA.NUM_DECONV_KERNELS", (v: number[]) => (sb.deconvKernels = v));
      take("MODEL.EXTRA.DECONV_WITH_BIAS", (v: boolean) => (sb.deconvWithBias = v));
      take("MODEL.EXTRA.FINAL_CONV_KERNEL", (v: number) => (sb.finalConvKernel = v));
      model.extra = { case: "simpleBaseline", value: sb };
      break;
    }
    case Architecture.HRNET: {
      const hrnet = create(HrnetSpecSchema);
      const branched = ["STAGE2", "STAGE3", "STAGE4"];
      const given = branched.filter((stage) => extraKeys.has(stage));
      if (given.length > 0) {
        for (const stage of branched) if (!extraKeys.has(stage)) problems.push(`MODEL.EXTRA.${stage}: missing (STAGE2, STAGE3 and STAGE4 go together)`);
      }
      hrnet.stages = ["STAGE1", ...branched].filter((stage) => extraKeys.has(stage)).map((stage) => hrnetStage(values, `MODEL.EXTRA.${stage}`));
      take("MODEL.EXTRA.FINAL_CONV_KERNEL", (v: number) => (hrnet.finalConvKernel = v));
      model.extra = { case: "hrnet", value: hrnet };
      break;
    }
    case Architecture.DETECTOR_LITE: {
      const detector = create(DetectorLiteSpecSchema);
      take("MODEL.EXTRA.CHANNELS", (v: number[]) => (detector.channels = v));
      take("MODEL.EXTRA.BLOCKS_PER_STAGE", (v: number) => (detector.blocksPerStage = v));
      take("MODEL.EXTRA.HEAD_CHANNELS", (v: number) => (detector.headChannels = v));
      model.extra = { case: "detectorLite", value: detector };
      for (const key of POSE_ONLY_KEYS) {
        if (present(key).length > 0) problems.push(`${key}: a pose model's setting; MODEL.NAME detector_lite is a person detector (whole pictures in, boxes out, measured by box AP)`);
      }
      break;
    }
    default:
      break;
  }

  // TRAIN
  take("TRAIN.LR", (v: number) => (optimizer.lr = v));
  take("TRAIN.OPTIMIZER", (v: OptimizerKind) => (optimizer.kind = v));
  take("TRAIN.MOMENTUM", (v: number) => (optimizer.momentum = v));
  take("TRAIN.WD", (v: number) => (optimizer.weightDecay = v));
  take("TRAIN.NESTEROV", (v: boolean) => (optimizer.nesterov = v));
  take("TRAIN.GAMMA1", (v: number) => (optimizer.beta1 = v));
  take("TRAIN.GAMMA2", (v: number) => (optimizer.beta2 = v));
  take("TRAIN.LR_SCHEDULE", (v: ScheduleKind) => (schedule.kind = v));
  take("TRAIN.LR_STEP", (v: number[]) => (schedule.lrSteps = v));
  take("TRAIN.LR_FACTOR", (v: number) => (schedule.lrFactor = v));
  take("TRAIN.MIN_LR", (v: number) => (schedule.minLr = v));
  take("TRAIN.WARMUP_STEPS", (v: number) => (schedule.warmupSteps = v));
  take("TRAIN.WARMUP_FACTOR", (v: number) => (schedule.warmupStartFactor = v));
  take("TRAIN.BEGIN_EPOCH", (v: number) => (config.beginEpoch = v));
  take("TRAIN.END_EPOCH", (v: number) => (config.endEpoch = v));
  take("TRAIN.BATCH_SIZE_PER_GPU", (v: number) => (config.batchSize = v));
  take("TRAIN.GRAD_ACCUM_STEPS", (v: number) => (config.gradAccumSteps = v));
  take("TRAIN.CLIP_GRAD", (v: number) => (config.clipGradNorm = v));
  take("TRAIN.AMP", (v: boolean) => (config.mixedPrecision = v));
  take("TRAIN.SEED", (v: number) => (config.seed = BigInt(v)));
  take("TRAIN.VALIDATE_EVERY", (v: number) => (config.validateEveryEpochs = v));
  take("TRAIN.INTRA_OP_THREADS", (v: number) => (config.intraOpThreads = v));
  take("TRAIN.REPLICAS", (v: number) => (config.replicas = v));
  take("TRAIN.DEVICE", (v: { device: Device; index: number }) => {
    config.device = v.device;
    config.deviceIndex = v.index;
  });
  take("TRAIN.ENGINE", (v: TrainingEngine) => (config.engine = v));
  take("TRAIN.GPUS", (v: number) => (config.gpus = v));
  take("TRAIN.NODES", (v: number) => (config.nodes = v));
  take("TRAIN.RDZV_ENDPOINT", (v: string) => (config.rdzvEndpoint = v));
  take("TRAIN.SYNC_BN", (v: boolean) => (config.syncBatchNorm = v));
  take("TRAIN.CHANNELS_LAST", (v: boolean) => (config.channelsLast = v));
  take("TRAIN.DATA_LOADER", (v: DataLoaderPlace) => (config.dataLoader = v));
  if (present("TRAIN.EMA").length > 0 && values.get("TRAIN.EMA.ENABLED") !== false) {
    const ema = (config.ema = create(EmaSpecSchema));
    take("TRAIN.EMA.DECAY", (v: number) => (ema.decay = v));
    take("TRAIN.EMA.WARMUP", (v: number) => (ema.warmupUpdates = v));
  }

  // TEST
  take("TEST.FLIP_TEST", (v: boolean) => (validation.flipTest = v));
  take("TEST.USE_GT_BBOX", (v: boolean) => (validation.useGtBoxes = v));
  take("TEST.OKS_THRE", (v: number) => (validation.oksThreshold = v));
  take("TEST.IN_VIS_THRE", (v: number) => (validation.keypointScoreThreshold = v));
  take("TEST.IMAGE_THRE", (v: number) => (validation.minDetectionScore = v));
  take("TEST.MAX_IMAGES", (v: number) => (validation.maxImages = v));

  // Ours
  take("PUBLISH.MODE", (v: PublishMode) => (publish.mode = v));
  take("PUBLISH.MODEL_NAME", (v: string) => (publish.modelName = v));
  take("PUBLISH.SKIP_PROMOTION", (v: boolean) => (publish.skipPromotion = v));
  take("QUANT.ENABLED", (v: boolean) => (quantization.enabled = v));
  take("QUANT.CALIBRATOR", (v: Calibrator) => (quantization.calibrator = v));
  take("QUANT.PERCENTILE", (v: number) => (quantization.percentile = v));
  take("QUANT.CALIBRATION_SAMPLES", (v: number) => (quantization.calibrationSamples = v));
  take("QUANT.MAX_AP_DROP", (v: number) => (quantization.maxApDrop = v));
  take("QUANT.FP32_NODES", (v: string[]) => (quantization.fp32Nodes = v));
  take("QUANT.FULL_RANGE_WEIGHTS", (v: boolean) => (quantization.fullRangeWeights = v));
  take("CHECKPOINT.EVERY_MINUTES", (v: number) => (checkpoint.everyMinutes = v));
  take("CHECKPOINT.KEEP_LAST", (v: number) => (checkpoint.keepLast = v));

  if (present("DISTILL").length > 0) {
    const distillation = (config.distillation = create(DistillationSpecSchema, {
      teacher: { name: (values.get("DISTILL.TEACHER_MODEL") as string | undefined) ?? "", version: (values.get("DISTILL.TEACHER_VERSION") as string | undefined) ?? "" },
    }));
    take("DISTILL.WEIGHT", (v: number) => (distillation.lossWeight = v));
    take("DISTILL.LOSS", (v: DistillationLoss) => (distillation.loss = v));
    take("DISTILL.TEMPERATURE", (v: number) => (distillation.temperature = v));
  }

  if (present("INIT_FROM").length > 0) {
    const init = (config.initFrom = create(InitFromSchema));
    const fromModel = values.has("INIT_FROM.MODEL") || values.has("INIT_FROM.VERSION");
    const fromCheckpoint = values.has("INIT_FROM.JOB_ID") || values.has("INIT_FROM.CHECKPOINT_ID");
    if (fromModel && fromCheckpoint) {
      problems.push("INIT_FROM: start from a published model (MODEL, VERSION) or from a checkpoint (JOB_ID, CHECKPOINT_ID), not both");
    } else if (fromModel) {
      if (!values.has("INIT_FROM.MODEL")) problems.push("INIT_FROM.VERSION: needs INIT_FROM.MODEL");
      const ref = create(ModelRefSchema, { name: (values.get("INIT_FROM.MODEL") as string | undefined) ?? "", version: (values.get("INIT_FROM.VERSION") as string | undefined) ?? "" });
      init.source = { case: "model", value: ref };
    } else if (fromCheckpoint) {
      const ref = create(CheckpointRefSchema, {
        jobId: (values.get("INIT_FROM.JOB_ID") as string | undefined) ?? "",
        checkpointId: (values.get("INIT_FROM.CHECKPOINT_ID") as string | undefined) ?? "",
      });
      init.source = { case: "checkpoint", value: ref };
    }
    take("INIT_FROM.SKIP_LAYERS", (v: string[]) => (init.skipLayers = v));
  }
  return config;
}

function hrnetStage(values: ReadonlyMap<string, unknown>, prefix: string): HrnetStage {
  const stage = create(HrnetStageSchema);
  const get = <T>(key: string): T | undefined => values.get(`${prefix}.${key}`) as T | undefined;
  stage.numModules = get<number>("NUM_MODULES") ?? 0;
  stage.numBranches = get<number>("NUM_BRANCHES") ?? 0;
  stage.block = get<BlockType>("BLOCK") ?? BlockType.UNSPECIFIED;
  stage.numBlocks = get<number[]>("NUM_BLOCKS") ?? [];
  stage.numChannels = get<number[]>("NUM_CHANNELS") ?? [];
  stage.fuseMethod = get<FuseMethod>("FUSE_METHOD") ?? FuseMethod.UNSPECIFIED;
  return stage;
}

/** The key a problem is about: "TRAIN.LR" of "TRAIN.LR (optimizer.lr) must be > 0" and of "TRAIN.LR: expected ...". */
function subject(problem: string): string {
  return /^[^\s:]+/.exec(problem)?.[0] ?? problem;
}

// ---------------------------------------------------------------------------------------------------------
// The public API.

/**
 * Reads an experiment file in the HRNet reference layout (TRAIN.LR, MODEL.IMAGE_SIZE, ...; see experiments/)
 * into a TrainConfig. `overrides` are dotted keys with values in YAML's scalar syntax ("TRAIN.LR": "0.01",
 * "TRAIN.LR_STEP": "[90, 120]"), applied before the file is read. Every problem of the file is reported: unknown
 * keys (with the nearest known one), wrong types, values PoseLoop cannot honour. The config is undefined
 * unless there are none; it is not resolved yet, so pass it to `resolveTrainConfig` (or use
 * `prepareExperiment`, which does both and checks the dataset's files).
 */
export function parseExperiment(yamlText: string, overrides: Readonly<Record<string, string>> = {}): { config: TrainConfig | undefined; problems: string[] } {
  const { config, problems } = convert(yamlText, overrides);
  return { config: problems.length === 0 ? config : undefined, problems };
}

export interface PrepareExperimentOptions {
  readonly overrides?: Readonly<Record<string, string>>;
  /** The trainer's data root; when given, a COCO dataset's folders and files are checked under it. */
  readonly dataRoot?: string;
}

/**
 * Everything between an experiment file and a run: parses it, resolves the TrainConfig's defaults, and checks
 * the dataset's files, reporting every problem of all three at once (a key already reported by the parser is
 * not reported again by the resolver). The config is resolved, and undefined unless there are no problems.
 * Throws PERMISSION_DENIED when a dataset path leaves the data root.
 */
export async function prepareExperiment(yamlText: string, options: PrepareExperimentOptions = {}): Promise<{ config: TrainConfig | undefined; problems: string[] }> {
  const checked = checkExperiment(yamlText, options.overrides ?? {});
  return withDatasetProblems(checked, options.dataRoot);
}

/**
 * prepareExperiment without the dataset's files: the CPU-bound part (YAML, vocabulary, resolution), which a
 * service runs in a worker thread. The config is the resolved one, possibly with problems (not undefined
 * just because of them), so that the dataset can still be checked when the file itself is fine.
 */
export function checkExperiment(yamlText: string, overrides: Readonly<Record<string, string>>): { config: TrainConfig | undefined; problems: string[] } {
  const conversion = convert(yamlText, overrides);
  if (conversion.config === undefined) return { config: undefined, problems: conversion.problems };
  const reported = new Set(conversion.problems.map(subject));
  const resolved = resolveTrainConfig(conversion.config);
  return { config: resolved.config, problems: [...conversion.problems, ...resolved.problems.filter((problem) => !reported.has(subject(problem)))] };
}

/** Adds the dataset's problems to a checked experiment's; the config stays only when there are none. */
export async function withDatasetProblems(checked: { config: TrainConfig | undefined; problems: string[] }, dataRoot: string | undefined): Promise<{ config: TrainConfig | undefined; problems: string[] }> {
  if (checked.config === undefined) return { config: undefined, problems: checked.problems };
  const problems = [...checked.problems];
  if (dataRoot !== undefined) problems.push(...(await datasetProblems(checked.config, dataRoot)), ...(await pretrainedProblems(checked.config, dataRoot)));
  return { config: problems.length === 0 ? checked.config : undefined, problems };
}

/**
 * MODEL.PRETRAINED's file under the data root, checked like the dataset's paths: a missing file or a folder is
 * a problem; a path leaving the root (by "..", as an absolute path elsewhere, or through a link) throws
 * PERMISSION_DENIED.
 */
export async function pretrainedProblems(config: TrainConfig, dataRoot: string): Promise<string[]> {
  const pretrained = config.model?.pretrained ?? "";
  if (pretrained === "") return [];
  const what = "MODEL.PRETRAINED (model.pretrained)";
  let real: string;
  try {
    real = await resolveUnder(dataRoot, pretrained, what);
  } catch (error) {
    if (AppError.is(error, Code.INVALID_ARGUMENT)) return [error.message];
    throw error;
  }
  const info = await stat(real).catch((error: unknown) => {
    throw AppError.from(error);
  });
  return info.isFile() ? [] : [`${what}: ${pretrained} is not a file`];
}
