import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HeatmapRefinement } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, BlockType, Device, OptimizerKind, PublishMode, ScheduleKind, TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseExperiment, prepareExperiment } from "./experiment.js";
import { resolveTrainConfig } from "./validate.js";
import { modelConfigFromSpec } from "./model-config.js";

const EXPERIMENTS = fileURLToPath(new URL("../../../../experiments/", import.meta.url));

async function shipped(relative: string): Promise<string> {
  return readFile(join(EXPERIMENTS, relative), "utf8");
}

/** Parses and resolves, failing the test with the problems when there are any. */
function load(yaml: string, overrides: Record<string, string> = {}) {
  const parsed = parseExperiment(yaml, overrides);
  expect(parsed.problems).toEqual([]);
  const resolved = resolveTrainConfig(parsed.config!);
  expect(resolved.problems).toEqual([]);
  return resolved.config;
}

/** A small valid COCO experiment; `train` replaces the TRAIN section's body. */
function cocoExperiment(train = "  LR: 0.001\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n  LR_STEP: [10, 15]\n"): string {
  return [
    "NAME: test",
    "DATASET:",
    "  DATASET: coco",
    "  ROOT: coco",
    "  TRAIN_SET: train2017",
    "  TEST_SET: val2017",
    "MODEL:",
    "  NAME: pose_resnet",
    "  IMAGE_SIZE: [192, 256]",
    "  HEATMAP_SIZE: [48, 64]",
    "  EXTRA:",
    "    NUM_LAYERS: 18",
    "TEST:",
    "  USE_GT_BBOX: true",
    "PUBLISH:",
    "  MODEL_NAME: test-model",
    "TRAIN:",
    train,
  ].join("\n");
}

describe("shipped experiments", () => {
  it("the synthetic demo trains the lite net on rendered people and publishes int8 'demo'", async () => {
    const config = load(await shipped("synthetic/lite_128x96_demo.yaml"));
    expect(config.model?.architecture).toBe(Architecture.LITE);
    expect(config.model?.inputSize).toMatchObject({ width: 96, height: 128 });
    // Half-resolution heatmaps: the lite net's extra step up (modelConfigFromSpec turns them into heatmapStride 2).
    expect(config.model?.codec?.kind.value).toMatchObject({ width: 48, height: 64, sigma: 2 });
    expect(modelConfigFromSpec(config.model!).lite).toMatchObject({ channels: [16, 32, 64, 128], heatmapStride: 2 });
    expect(config.data?.kind).toBe(DatasetKind.SYNTHETIC);
    expect(config.data?.synthetic).toMatchObject({ trainImages: 4000, valImages: 200 });
    // 4000 decoded pictures outgrow a loader worker's memory cache: decoded once, read back from disk.
    expect(config.data?.diskCache).toBe(true);
    // Two replicas of batch 8: one update of 16 samples at 6e-3, which needs its linear warm-up.
    expect(config.optimizer).toMatchObject({ kind: OptimizerKind.ADAM, lr: 0.006 });
    expect(config.schedule).toMatchObject({ kind: ScheduleKind.COSINE, warmupSteps: 200, warmupStartFactor: 0.001 });
    expect(config.batchSize).toBe(8);
    expect(config.replicas).toBe(2);
    expect(config.intraOpThreads).toBe(1);
    expect(config.endEpoch - config.beginEpoch).toBeGreaterThanOrEqual(10);
    expect(config.validateEveryEpochs).toBe(1);
    expect(config.publish).toMatchObject({ mode: PublishMode.BEST, modelName: "demo" });
    expect(config.quantization?.enabled).toBe(true);
  });

  it("HRNet-W32 256x192 keeps the reference recipe", async () => {
    const config = load(await shipped("coco/hrnet/w32_256x192_adam_lr1e-3.yaml"));
    expect(config.model?.architecture).toBe(Architecture.HRNET);
    expect(config.model?.inputSize).toMatchObject({ width: 192, height: 256 });
    expect(config.model?.codec?.kind.value).toMatchObject({ width: 48, height: 64, sigma: 2 });
    expect(config.optimizer).toMatchObject({ kind: OptimizerKind.ADAM, lr: 0.001 });
    expect(config.schedule).toMatchObject({ kind: ScheduleKind.MULTISTEP, lrSteps: [170, 200] });
    expect(config.schedule?.lrFactor).toBeCloseTo(0.1);
    expect(config.endEpoch).toBe(210);
    // 4 GPUs x 32 in the reference: 32 per micro-batch, 4 micro-batches per update.
    expect(config.batchSize * config.gradAccumSteps).toBe(128);
    expect(config.data?.coco).toMatchObject({ root: "coco", trainAnnotations: "annotations/person_keypoints_train2017.json", valImages: "val2017" });
    const hrnet = config.model?.extra.case === "hrnet" ? config.model.extra.value : undefined;
    expect(hrnet?.stages.map((stage) => stage.numBranches)).toEqual([1, 2, 3, 4]);
    expect(hrnet?.stages.map((stage) => stage.numModules)).toEqual([1, 1, 4, 3]);
    expect(hrnet?.stages[3]?.numChannels).toEqual([32, 64, 128, 256]);
    expect(hrnet?.stages[1]?.block).toBe(BlockType.BASIC);
    expect(config.augmentation).toMatchObject({ flip: true, rotationFactor: 45, halfBodyMinKeypoints: 8 });
    expect(config.augmentation?.scaleFactor).toBeCloseTo(0.35);
  });

  it("SimpleBaseline ResNet-50 256x192 keeps the reference recipe", async () => {
    const config = load(await shipped("coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml"));
    expect(config.model?.architecture).toBe(Architecture.SIMPLE_BASELINE);
    const sb = config.model?.extra.case === "simpleBaseline" ? config.model.extra.value : undefined;
    expect(sb).toMatchObject({ resnetDepth: 50, deconvFilters: [256, 256, 256], deconvKernels: [4, 4, 4], deconvWithBias: false, finalConvKernel: 1 });
    expect(config.schedule?.lrSteps).toEqual([90, 120]);
    expect(config.endEpoch).toBe(140);
    expect(config.optimizer?.lr).toBe(0.001);
    expect(config.device).toBe(Device.CUDA);
  });
});

describe("parseExperiment", () => {
  it("names an unknown key by its dotted path with the nearest known one", () => {
    const { config, problems } = parseExperiment(cocoExperiment("  LRR: 0.001\n"));
    expect(config).toBeUndefined();
    expect(problems).toContain("TRAIN.LRR: unknown key (did you mean TRAIN.LR?)");
  });

  it("suggests a key that belongs to another section", () => {
    expect(parseExperiment("TRAIN:\n  IMAGE_SIZE: [192, 256]\n").problems).toEqual(["TRAIN.IMAGE_SIZE: unknown key (did you mean MODEL.IMAGE_SIZE or DATASET.SYNTHETIC.IMAGE_SIZE?)"]);
  });

  it("reports a wrong type with the value it got", () => {
    expect(parseExperiment(cocoExperiment('  LR: "abc"\n')).problems).toContain('TRAIN.LR: expected a number, got "abc"');
  });

  it("refuses reference keys it cannot honour", () => {
    const yaml = [
      "MODEL:",
      "  PRETRAINED: 42",
      "  TARGET_TYPE: offset",
      "DATASET:",
      "  COLOR_RGB: false",
      "LOSS:",
      "  USE_TARGET_WEIGHT: false",
    ].join("\n");
    const problems = parseExperiment(yaml).problems;
    expect(problems).toHaveLength(4);
    expect(problems.map((problem) => problem.split(":")[0])).toEqual(["MODEL.PRETRAINED", "MODEL.TARGET_TYPE", "DATASET.COLOR_RGB", "LOSS.USE_TARGET_WEIGHT"]);
  });

  it("takes the reference's TEST keys: IMAGE_THRE filters detections, and values PoseLoop cannot honour are refused", () => {
    const config = load(cocoExperiment(), { "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets.json", "TEST.IMAGE_THRE": "0.3", "TEST.BBOX_THRE": "1.0", "TEST.NMS_THRE": "1.0", "TEST.SOFT_NMS": "false", "TEST.SHIFT_HEATMAP": "true" });
    expect(config.validation?.useGtBoxes).toBe(false);
    expect(config.validation?.minDetectionScore).toBeCloseTo(0.3);
    expect(config.data?.coco?.valDetections).toBe("dets.json");

    const refused = parseExperiment(cocoExperiment(), { "TEST.SOFT_NMS": "true", "TEST.NMS_THRE": "0.5", "TEST.BBOX_THRE": "0.5", "TEST.SHIFT_HEATMAP": "false" }).problems;
    expect(refused.map((problem) => problem.split(":")[0]).sort()).toEqual(["TEST.BBOX_THRE", "TEST.NMS_THRE", "TEST.SHIFT_HEATMAP", "TEST.SOFT_NMS"]);
    expect(refused.find((problem) => problem.startsWith("TEST.SOFT_NMS"))).toContain("hard OKS-NMS at TEST.OKS_THRE");

    const parsed = parseExperiment(cocoExperiment(), { "TEST.IMAGE_THRE": "2" });
    expect(parsed.problems).toEqual([]);
    expect(resolveTrainConfig(parsed.config!).problems).toEqual(["TEST.IMAGE_THRE (validation.min_detection_score) must be in [0, 1], got 2"]);
  });

  it("chooses the heatmap refinement with POST_PROCESS or our TEST.REFINEMENT, not both", () => {
    const refinement = (overrides: Record<string, string>) => (load(cocoExperiment(), overrides).model?.codec?.kind.value as { refinement: HeatmapRefinement }).refinement;
    expect(refinement({})).toBe(HeatmapRefinement.QUARTER_OFFSET);
    expect(refinement({ "TEST.POST_PROCESS": "false" })).toBe(HeatmapRefinement.NONE);
    expect(refinement({ "TEST.REFINEMENT": "dark" })).toBe(HeatmapRefinement.DARK);
    expect(parseExperiment(cocoExperiment(), { "TEST.REFINEMENT": "taylor" }).problems).toEqual(['TEST.REFINEMENT: expected one of none, quarter_offset, dark, got "taylor"']);
    expect(parseExperiment(cocoExperiment(), { "TEST.REFINEMENT": "dark", "TEST.POST_PROCESS": "true" }).problems).toEqual([
      "TEST.POST_PROCESS and TEST.REFINEMENT both choose the heatmap refinement: give one",
    ]);
  });

  it("runs TRAIN.REPLICAS data-parallel replicas, never together with gradient accumulation", () => {
    expect(load(cocoExperiment(), {}).replicas).toBe(1);
    expect(load(cocoExperiment(), { "TRAIN.REPLICAS": "2" }).replicas).toBe(2);
    expect(parseExperiment(cocoExperiment(), { "TRAIN.REPLICAS": "0" }).problems).toEqual([expect.stringMatching(/^TRAIN\.REPLICAS: /) as string]);
    const both = parseExperiment(cocoExperiment(), { "TRAIN.REPLICAS": "2", "TRAIN.GRAD_ACCUM_STEPS": "4" });
    expect(resolveTrainConfig(both.config!).problems).toEqual(["TRAIN.REPLICAS (replicas) 2 and TRAIN.GRAD_ACCUM_STEPS (grad_accum_steps) 4 cannot be combined: use one or the other"]);
  });

  it("quantizes weights to the range every CPU computes exactly unless QUANT.FULL_RANGE_WEIGHTS asks for 8 bits", () => {
    expect(load(cocoExperiment(), {}).quantization?.fullRangeWeights).toBe(false);
    expect(load(cocoExperiment(), { "QUANT.FULL_RANGE_WEIGHTS": "true" }).quantization?.fullRangeWeights).toBe(true);
    expect(parseExperiment(cocoExperiment(), { "QUANT.FULL_RANGE_WEIGHTS": "7" }).problems).toEqual([expect.stringMatching(/^QUANT\.FULL_RANGE_WEIGHTS: /) as string]);
  });

  it("accepts the reference's CUDNN settings and directories", () => {
    const yaml = `${cocoExperiment()}\nCUDNN:\n  BENCHMARK: true\nGPUS: (0,1,2,3)\nOUTPUT_DIR: output\nLOG_DIR: log\n`;
    expect(parseExperiment(yaml).problems).toEqual([]);
  });

  it("reports settings of another architecture and of another dataset kind", () => {
    const yaml = cocoExperiment().replace("    NUM_LAYERS: 18", "    NUM_LAYERS: 18\n    CHANNELS: [8, 16, 32]").replace("  ROOT: coco", "  ROOT: coco\n  SYNTHETIC:\n    TRAIN_IMAGES: 10");
    expect(parseExperiment(yaml).problems).toEqual(["DATASET.SYNTHETIC: only for DATASET.DATASET synthetic", "MODEL.EXTRA.CHANNELS: only for MODEL.NAME pose_lite or detector_lite"]);
  });

  it("reports YAML syntax errors", () => {
    const { config, problems } = parseExperiment("TRAIN:\n  LR: [1,\n");
    expect(config).toBeUndefined();
    expect(problems[0]).toMatch(/^YAML: /);
  });

  it("applies overrides with YAML scalar rules before converting", () => {
    const config = load(cocoExperiment(), { "TRAIN.LR": "0.01", "TRAIN.LR_STEP": "[5, 12]", "TRAIN.OPTIMIZER": "sgd", "TRAIN.MOMENTUM": "0.9", "DATASET.FLIP": "true" });
    expect(config.optimizer).toMatchObject({ kind: OptimizerKind.SGD, lr: 0.01 });
    expect(config.schedule?.lrSteps).toEqual([5, 12]);
    expect(config.augmentation?.flip).toBe(true);
  });

  it("reports an unknown override key and a mistyped override value", () => {
    const { problems } = parseExperiment(cocoExperiment(), { "TRAIN.LRR": "0.01", "TRAIN.END_EPOCH": "ten" });
    expect(problems).toEqual(["override TRAIN.LRR: unknown key (did you mean TRAIN.LR?)", 'TRAIN.END_EPOCH: expected a non-negative integer, got "ten"']);
  });
});

describe("engine keys", () => {
  it("reads TRAIN.ENGINE, cuda:N, the torchrun settings and MODEL.PRETRAINED into the config", () => {
    const { config, problems } = parseExperiment(
      cocoExperiment("  LR: 0.001\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n  ENGINE: pytorch\n  DEVICE: cuda:3\n  GPUS: 4\n  NODES: 2\n  RDZV_ENDPOINT: head-0:29400\n  SYNC_BN: true\n  CHANNELS_LAST: false\n"),
      { "MODEL.PRETRAINED": "weights/resnet50.pth" },
    );
    expect(problems).toEqual([]);
    expect(config).toMatchObject({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, deviceIndex: 3, gpus: 4, nodes: 2, rdzvEndpoint: "head-0:29400", syncBatchNorm: true, channelsLast: false });
    expect(config?.model?.pretrained).toBe("weights/resnet50.pth");
  });

  it("names a GPU index that is not a non-negative integer, and an endpoint that is not host:port", () => {
    const problems = parseExperiment("TRAIN:\n  DEVICE: cuda:-1\n  RDZV_ENDPOINT: head-0\n  ENGINE: tensorflow\n").problems;
    expect(problems).toEqual([
      "TRAIN.DEVICE: cuda:-1: the GPU index after cuda: must be a non-negative integer (cuda:0, cuda:1, ...)",
      'TRAIN.RDZV_ENDPOINT: expected host:port (torchrun\'s rendezvous endpoint), got "head-0"',
      'TRAIN.ENGINE: expected one of onnxruntime, pytorch, got "tensorflow"',
    ]);
    expect(parseExperiment("TRAIN:\n  DEVICE: cuda:1.5\n").problems).toEqual(["TRAIN.DEVICE: cuda:1.5: the GPU index after cuda: must be a non-negative integer (cuda:0, cuda:1, ...)"]);
  });
});

describe("invalid experiments", () => {
  let dataRoot: { path: string; remove: () => Promise<void> };
  beforeEach(async () => {
    dataRoot = await makeTempDir("poseloop-experiment-");
  });
  afterEach(async () => {
    await dataRoot.remove();
  });

  async function problemsOf(yaml: string): Promise<string[]> {
    const { config, problems } = await prepareExperiment(yaml, { dataRoot: dataRoot.path });
    expect(config).toBeUndefined();
    return problems;
  }

  async function withCocoFiles(): Promise<void> {
    for (const split of ["train2017", "val2017"]) {
      await mkdir(join(dataRoot.path, "coco", split), { recursive: true });
      await mkdir(join(dataRoot.path, "coco", "annotations"), { recursive: true });
      await writeFile(join(dataRoot.path, "coco", "annotations", `person_keypoints_${split}.json`), "{}");
    }
  }

  it("a valid COCO experiment has no problems once its files exist", async () => {
    await withCocoFiles();
    const { config, problems } = await prepareExperiment(cocoExperiment(), { dataRoot: dataRoot.path });
    expect(problems).toEqual([]);
    expect(config?.batchSize).toBe(32);
  });

  const cases: [string, string, RegExp][] = [
    ["a negative learning rate", "  LR: -0.1\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n", /^TRAIN\.LR \(optimizer\.lr\) must be > 0, got -0\.1$/],
    ["an unknown optimizer", "  LR: 0.001\n  OPTIMIZER: rmsprop\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n", /^TRAIN\.OPTIMIZER: expected one of sgd, adam, adamw, got "rmsprop"$/],
    ["batch size 0", "  LR: 0.001\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 0\n  END_EPOCH: 20\n", /^TRAIN\.BATCH_SIZE_PER_GPU \(batch_size\) must be > 0, got 0$/],
    ["an unknown key", "  LR: 0.001\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n  WARMUP: 100\n", /^TRAIN\.WARMUP: unknown key/],
    ["LR_STEP not increasing", "  LR: 0.001\n  OPTIMIZER: adam\n  BATCH_SIZE_PER_GPU: 32\n  END_EPOCH: 20\n  LR_STEP: [15, 10]\n", /^TRAIN\.LR_STEP \(schedule\.lr_steps\) must be strictly increasing, got \[15, 10\]$/],
  ];

  it.each(cases)("%s is a problem naming its key", async (_, train, expected) => {
    await withCocoFiles();
    const problems = await problemsOf(cocoExperiment(train));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(expected);
  });

  it("a COCO root missing under the data root is a problem naming it", async () => {
    expect(await problemsOf(cocoExperiment())).toEqual(["DATASET.ROOT: coco does not exist"]);
  });

  it("checks MODEL.PRETRAINED under the data root like the dataset's files", async () => {
    const pytorch = { "TRAIN.ENGINE": "pytorch", "DATASET.DATASET": "synthetic", "DATASET.SYNTHETIC.TRAIN_IMAGES": "8", "DATASET.SYNTHETIC.VAL_IMAGES": "4", "DATASET.SYNTHETIC.IMAGE_SIZE": "[128, 96]", "TEST.USE_GT_BBOX": "true" };
    const yaml = "MODEL: { NAME: pose_lite, IMAGE_SIZE: [48, 64] }\nTRAIN: { LR: 0.001, OPTIMIZER: adam, BATCH_SIZE_PER_GPU: 4, END_EPOCH: 1 }\nPUBLISH: { MODE: never }\n";
    const missing = await prepareExperiment(yaml, { dataRoot: dataRoot.path, overrides: { ...pytorch, "MODEL.PRETRAINED": "weights/missing.pth" } });
    expect(missing.problems).toEqual(["MODEL.PRETRAINED (model.pretrained): weights/missing.pth does not exist"]);
    await mkdir(join(dataRoot.path, "weights"), { recursive: true });
    await writeFile(join(dataRoot.path, "weights", "lite.pth"), "state_dict");
    const found = await prepareExperiment(yaml, { dataRoot: dataRoot.path, overrides: { ...pytorch, "MODEL.PRETRAINED": "weights/lite.pth" } });
    expect(found.problems).toEqual([]);
    await expect(prepareExperiment(yaml, { dataRoot: dataRoot.path, overrides: { ...pytorch, "MODEL.PRETRAINED": "/etc/passwd.pth" } })).rejects.toMatchObject({ code: 7 });
  });

  it("lists every problem of a file at once", async () => {
    const yaml = cocoExperiment("  LR: -0.1\n  OPTIMIZER: rmsprop\n  BATCH_SIZE_PER_GPU: 0\n  END_EPOCH: 20\n  LR_STEP: [15, 10]\n  LRR: 1\n");
    const problems = await problemsOf(yaml);
    const subjects = problems.map((problem) => problem.split(/[ :]/, 1)[0]);
    expect(subjects).toEqual(expect.arrayContaining(["TRAIN.LR", "TRAIN.OPTIMIZER", "TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.LRR", "TRAIN.LR_STEP", "DATASET.ROOT"]));
    // The parser's problem with OPTIMIZER is not repeated by the resolver.
    expect(problems).toHaveLength(6);
  });
});

describe("experiment file limits", () => {
  const valid = () => cocoExperiment();

  it("refuses a file over 256 KiB before parsing it, naming the limit", () => {
    const big = `${valid()}\nCUDNN:\n${Array.from({ length: 30_000 }, (_, i) => `  K${i}: 1`).join("\n")}\n`;
    const started = performance.now();
    const { config, problems } = parseExperiment(big);
    expect(config).toBeUndefined();
    expect(problems).toEqual([`the experiment file is ${Buffer.byteLength(big)} bytes; the limit is 262144 bytes (256 KiB)`]);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("refuses an alias bomb as a problem naming the alias limit, not an internal error", () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++) levels.push(`${"abcdefghi"[i]}: &${"abcdefghi"[i]} [${Array.from({ length: 9 }, () => `*${"abcdefghi"[i - 1]}`).join(", ")}]`);
    const bomb = `${valid()}\nCUDNN:\n${levels.map((line) => `  ${line}`).join("\n")}\n`;
    const { problems } = parseExperiment(bomb);
    expect(problems).toEqual(["YAML: aliases expand past the limit of 100 alias expansions (maxAliasCount)"]);
  });

  it("refuses more aliases than the limit", () => {
    const many = `${valid()}\nCUDNN:\n  base: &b 1\n${Array.from({ length: 101 }, (_, i) => `  k${i}: *b`).join("\n")}\n`;
    expect(parseExperiment(many).problems).toEqual(["YAML: 101 aliases; the limit is 100 aliases"]);
  });

  it("refuses nesting deeper than 32 levels, in the file and in an override", () => {
    const deep = `${valid()}\nCUDNN: ${"[".repeat(40)}${"]".repeat(40)}\n`;
    expect(parseExperiment(deep).problems).toEqual(["YAML: nesting deeper than 32 levels (the limit on nesting depth)"]);
    const veryDeep = `${valid()}\nCUDNN: ${"[".repeat(100_000)}${"]".repeat(100_000)}\n`;
    expect(parseExperiment(veryDeep).problems).toEqual(["YAML: nesting deeper than 32 levels (the limit on nesting depth)"]);
    expect(parseExperiment(valid(), { "CUDNN.X": `${"[".repeat(40)}${"]".repeat(40)}` }).problems).toEqual(["override CUDNN.X: nesting deeper than 32 levels (the limit on nesting depth)"]);
  });

  it("reports a key given twice in one mapping, with its line", () => {
    const { config, problems } = parseExperiment("TRAIN:\n  LR: 0.1\n  LR: 0.2\n");
    expect(config).toBeUndefined();
    expect(problems).toEqual(["YAML: LR is given twice in one mapping at line 3"]);
  });

  it("refuses too many or too long overrides", () => {
    const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`CUDNN.K${i}`, "1"]));
    expect(parseExperiment(valid(), many).problems).toEqual(["257 overrides; the limit is 256"]);
    expect(parseExperiment(valid(), { "CUDNN.X": "x".repeat(5000) }).problems).toEqual(["override CUDNN.X: 5007 bytes; the limit is 4096 bytes per override"]);
  });
});
