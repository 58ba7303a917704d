import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { HeatmapRefinement } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, BlockType, Calibrator, DataLoaderPlace, Device, OptimizerKind, PublishMode, ScheduleKind, TrainConfigSchema, TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { describe, expect, it } from "vitest";
import { modelConfigFromSpec } from "./model-config.js";
import { resolveTrainConfig } from "./validate.js";

/** The plain-object form of a TrainConfig initializer (not an existing message). */
type Init = Exclude<MessageInitShape<typeof TrainConfigSchema>, { $typeName: string }>;

/** A minimal valid config: the lite net on synthetic data. */
function minimal(init: Partial<Init> = {}): Init {
  return {
    name: "t",
    model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 } },
    data: { kind: DatasetKind.SYNTHETIC, synthetic: { trainImages: 10, valImages: 2, imageWidth: 64, imageHeight: 64 } },
    optimizer: { kind: OptimizerKind.ADAM, lr: 1e-3 },
    batchSize: 4,
    endEpoch: 2,
    validation: { useGtBoxes: true },
    publish: { modelName: "demo" },
    ...init,
  };
}

function resolve(init: Init) {
  return resolveTrainConfig(create(TrainConfigSchema, init));
}

describe("resolveTrainConfig", () => {
  it("applies the documented defaults", () => {
    const { config, problems } = resolve(minimal());
    expect(problems).toEqual([]);
    expect(config).toMatchObject({ gradAccumSteps: 1, validateEveryEpochs: 1, logEverySteps: 10, loaderWorkers: 1, device: Device.CPU });
    expect(config.optimizer).toMatchObject({ beta1: 0.9, beta2: 0.999 });
    expect(config.optimizer?.epsilon).toBeCloseTo(1e-8, 12);
    expect(config.model?.keypointSchema?.name).toBe("coco-17");
    expect(config.model?.keypointSchema?.keypointNames).toHaveLength(17);
    expect(config.model?.mean).toEqual([123.675, 116.28, 103.53]);
    expect(config.model?.codec?.kind).toMatchObject({ case: "heatmap", value: { width: 12, height: 16, sigma: 2, refinement: HeatmapRefinement.QUARTER_OFFSET } });
    expect(config.model?.extra).toMatchObject({ case: "lite", value: { channels: [16, 32, 64], blocksPerStage: 1 } });
    expect(config.data).toMatchObject({ minKeypoints: 1, synthetic: { maxPeople: 4 } });
    expect(config.schedule?.kind).toBe(ScheduleKind.CONSTANT);
    expect(config.publish?.mode).toBe(PublishMode.BEST);
    expect(config.checkpoint?.keepLast).toBe(3);
    expect(config.quantization).toMatchObject({ calibrator: Calibrator.PERCENTILE, percentile: 99.99, calibrationSamples: 256, maxApDrop: 1 });
  });

  it("leaves its input alone and is idempotent", () => {
    const input = create(TrainConfigSchema, minimal());
    const once = resolveTrainConfig(input).config;
    expect(input.gradAccumSteps).toBe(0);
    expect(resolveTrainConfig(once).config).toEqual(once);
  });

  it("fills the reference HRNet-W32 layout, stem stage first", () => {
    const { config, problems } = resolve(minimal({ model: { architecture: Architecture.HRNET, inputSize: { width: 192, height: 256 } } }));
    expect(problems).toEqual([]);
    const hrnet = config.model?.extra.case === "hrnet" ? config.model.extra.value : undefined;
    expect(hrnet?.stages.map((stage) => stage.numChannels)).toEqual([[64], [32, 64], [32, 64, 128], [32, 64, 128, 256]]);
    expect(modelConfigFromSpec(config.model!)).toMatchObject({ architecture: "hrnet", inputWidth: 192, hrnet: { stage1Planes: 64, finalConvKernel: 1 } });
  });

  it("keeps a given stem stage and fills the branched stages of HRNet-W<width>", () => {
    const stem = { numModules: 1, numBranches: 1, block: BlockType.BOTTLENECK, numBlocks: [4], numChannels: [32] };
    const { config, problems } = resolve(
      minimal({ model: { architecture: Architecture.HRNET, inputSize: { width: 64, height: 64 }, extra: { case: "hrnet", value: { width: 8, stages: [stem] } } } }),
    );
    expect(problems).toEqual([]);
    const hrnet = config.model?.extra.case === "hrnet" ? config.model.extra.value : undefined;
    expect(hrnet?.stages.map((stage) => stage.numChannels)).toEqual([[32], [8, 16], [8, 16, 32], [8, 16, 32, 64]]);
    expect(modelConfigFromSpec(config.model!).hrnet).toMatchObject({ stage1Planes: 32, width: 8 });
  });

  it("reports every problem of a config, in the experiment-file vocabulary", () => {
    const { problems } = resolve(
      minimal({
        optimizer: { kind: OptimizerKind.UNSPECIFIED, lr: -0.1, momentum: 1.5 },
        schedule: { kind: ScheduleKind.MULTISTEP, lrSteps: [1, 5], lrFactor: 2 },
        batchSize: 0,
        clipGradNorm: -1,
        beginEpoch: 3,
        endEpoch: 3,
        mixedPrecision: true,
        quantization: { percentile: 101 },
        data: { kind: DatasetKind.COCO, valFraction: 1 },
        publish: { modelName: "Bad Name" },
        distillation: { teacher: { name: "teacher" }, lossWeight: -1 },
      }),
    );
    const expected = [
      "TRAIN.LR (optimizer.lr) must be > 0, got -0.1",
      "TRAIN.OPTIMIZER (optimizer.kind) must be sgd, adam or adamw, got unspecified",
      "TRAIN.MOMENTUM (optimizer.momentum) must be in [0, 1), got 1.5",
      "TRAIN.BATCH_SIZE_PER_GPU (batch_size) must be > 0, got 0",
      "TRAIN.CLIP_GRAD (clip_grad_norm) must be >= 0 (0: no clipping), got -1",
      "TRAIN.END_EPOCH (end_epoch) must be greater than TRAIN.BEGIN_EPOCH (begin_epoch) 3, got 3",
      "TRAIN.LR_FACTOR (schedule.lr_factor) must be in (0, 1], got 2",
      "TRAIN.AMP (mixed_precision): mixed precision needs a GPU execution provider (TRAIN.DEVICE cuda or webgpu), got cpu",
      "QUANT.PERCENTILE (quantization.percentile) must be in (0, 100], got 101",
      "DATASET.VAL_FRACTION (data.val_fraction) must be in [0, 1), got 1",
      "DATASET.ROOT (data.coco.root) is required for a COCO dataset: a folder under the trainer's data root",
      "DISTILL.WEIGHT (distillation.loss_weight) must be > 0, got -1",
    ];
    expect(problems).toEqual(expect.arrayContaining(expected));
    expect(problems.some((problem) => problem.startsWith("PUBLISH.MODEL_NAME (publish.model_name): model name \"Bad Name\""))).toBe(true);
  });

  it("reports LR steps outside the run and an unspecified dataset kind", () => {
    const { problems } = resolve(minimal({ schedule: { lrSteps: [1, 9] }, data: {} }));
    expect(problems).toEqual([
      "DATASET.DATASET (data.kind) must be coco or synthetic, got unspecified",
      "TRAIN.LR_STEP (schedule.lr_steps) must lie in [TRAIN.BEGIN_EPOCH, TRAIN.END_EPOCH) = [0, 2), got [1, 9]",
    ]);
  });

  it("reports a heatmap that is not a quarter of the input and the zoo's own model problems", () => {
    const { problems } = resolve(
      minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 50, height: 64 }, codec: { kind: { case: "heatmap", value: { width: 16, height: 16 } } } } }),
    );
    expect(problems).toEqual([
      "MODEL: lite needs an input size divisible by 8, got 50x64",
      "MODEL.HEATMAP_SIZE (model.codec.heatmap) must be MODEL.IMAGE_SIZE / 4 = [12.5, 16] or, for pose_lite, / 2 = [25, 32], got [16, 16]",
    ]);
  });

  it("takes a lite heatmap at half the input as the half-resolution head; the other models output 1/4 only", () => {
    const half = { kind: { case: "heatmap", value: { width: 24, height: 32 } } } as const;
    const lite = resolve(minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, codec: half } }));
    expect(lite.problems).toEqual([]);
    expect(modelConfigFromSpec(lite.config.model!).lite?.heatmapStride).toBe(2);
    const quarter = resolve(minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 } } }));
    expect(modelConfigFromSpec(quarter.config.model!).lite?.heatmapStride).toBeUndefined();
    const hrnet = resolve(minimal({ model: { architecture: Architecture.HRNET, inputSize: { width: 64, height: 64 }, codec: { kind: { case: "heatmap", value: { width: 32, height: 32 } } } } }));
    expect(hrnet.problems).toContain("MODEL.HEATMAP_SIZE (model.codec.heatmap) must be MODEL.IMAGE_SIZE / 4 = [16, 16], got [32, 32]");
  });

  it("takes a fourth lite width as a 1/16 stage, which needs an input divisible by 16", () => {
    const four = resolve(minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, extra: { case: "lite", value: { channels: [8, 16, 32, 64] } } } }));
    expect(four.problems).toEqual([]);
    expect(modelConfigFromSpec(four.config.model!).lite?.channels).toEqual([8, 16, 32, 64]);
    const { problems } = resolve(
      minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 40, height: 64 }, extra: { case: "lite", value: { channels: [8, 16, 32, 64] } } } }),
    );
    expect(problems).toContain("MODEL: lite needs an input size divisible by 16, got 40x64");
    expect(resolve(minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, extra: { case: "lite", value: { channels: [8, 16] } } } })).problems).toEqual([
      "MODEL.EXTRA.CHANNELS (model.lite.channels) must be three or four positive widths (1/2, 1/4, 1/8 and optionally 1/16 of the input), got [8, 16]",
    ]);
  });

  it("reports an inconsistent keypoint schema", () => {
    const { problems } = resolve(
      minimal({
        model: {
          architecture: Architecture.LITE,
          inputSize: { width: 48, height: 64 },
          keypointSchema: { name: "two", keypointNames: ["a", "b"], skeleton: [{ fromIndex: 0, toIndex: 5 }], flipPairs: [{ leftIndex: 0, rightIndex: 2 }], oksSigmas: [0.1] },
        },
      }),
    );
    expect(problems).toEqual([
      "model.keypoint_schema: expected 2 OKS sigmas, got 1",
      "model.keypoint_schema: limb [0, 5] is out of range",
      "model.keypoint_schema: flip pair [0, 2] is invalid",
    ]);
  });

  it("accepts mixed precision on a GPU execution provider", () => {
    expect(resolve(minimal({ mixedPrecision: true, device: Device.CUDA })).problems).toEqual([]);
  });
});

describe("resolveTrainConfig's upper bounds", () => {
  it("refuses sizes that would fail, or run for years, once the job started, naming each key", () => {
    const { problems } = resolve(
      minimal({
        model: { architecture: Architecture.LITE, inputSize: { width: 100_000, height: 100_000 } },
        batchSize: 1_000_000,
        endEpoch: 1_000_000,
        loaderWorkers: 10_000,
        gradAccumSteps: 100_000,
      }),
    );
    expect(problems).toContain("MODEL.IMAGE_SIZE (model.input_size) must be at most 2048 pixels each, got [100000, 100000]");
    expect(problems).toContain("TRAIN.BATCH_SIZE_PER_GPU (batch_size) must be at most 1024, got 1000000");
    expect(problems).toContain("TRAIN.END_EPOCH (end_epoch) must be at most 10000, got 1000000");
    expect(problems).toContain("WORKERS (loader_workers) must be at most 64, got 10000");
    expect(problems).toContain("TRAIN.GRAD_ACCUM_STEPS (grad_accum_steps) must be at most 1024, got 100000");
    expect(resolve(minimal({ replicas: 65 })).problems).toContain("TRAIN.REPLICAS (replicas) must be at most 64, got 65");
  });

  it("keeps the reference recipes' sizes", () => {
    expect(resolve(minimal({ model: { architecture: Architecture.LITE, inputSize: { width: 288, height: 384 } }, batchSize: 64, endEpoch: 210, loaderWorkers: 24, gradAccumSteps: 4 })).problems).toEqual([]);
  });
});

describe("resolveTrainConfig's references", () => {
  it("refuses ids and versions that are not the shapes the trainer issues (no path traversal)", () => {
    const checkpoint = resolve(minimal({ initFrom: { source: { case: "checkpoint", value: { jobId: "../../etc", checkpointId: "../passwd" } } } })).problems;
    expect(checkpoint).toEqual([
      'INIT_FROM.JOB_ID (init_from.checkpoint.job_id): "../../etc" is not a job id (job-YYYYMMDD-HHMMSS-xxxxxx)',
      'INIT_FROM.CHECKPOINT_ID (init_from.checkpoint.checkpoint_id): "../passwd" is not a checkpoint id (e<epoch>-s<step>, as ListCheckpoints shows them)',
    ]);
    const model = resolve(minimal({ initFrom: { source: { case: "model", value: { name: "demo", version: "../../x" } } } })).problems;
    expect(model).toEqual(['INIT_FROM.VERSION (init_from.model.version): "../../x" is not a model version (1-128 letters, digits, \'.\', \'-\' or \'_\')']);
    const teacher = resolve(minimal({ distillation: { teacher: { name: "demo", version: "a/../b" }, lossWeight: 1 } })).problems;
    expect(teacher).toEqual(['DISTILL.TEACHER_VERSION (distillation.teacher.version): "a/../b" is not a model version (1-128 letters, digits, \'.\', \'-\' or \'_\')']);
  });

  it("accepts ids and versions the trainer and the registry issue", () => {
    expect(resolve(minimal({ initFrom: { source: { case: "checkpoint", value: { jobId: "job-20261127-231509-3f9a1c", checkpointId: "e0003-s0000120-b00004" } } } })).problems).toEqual([]);
    expect(resolve(minimal({ initFrom: { source: { case: "model", value: { name: "demo", version: "20261127-231509-3f9a1c" } } } })).problems).toEqual([]);
    expect(resolve(minimal({ distillation: { teacher: { name: "demo" }, lossWeight: 1 } })).problems).toEqual([]);
  });
});

describe("engines and devices", () => {
  it("defaults to onnxruntime, one process and one node, and channels-last for pytorch on cuda only", () => {
    const plain = resolve(minimal()).config;
    expect(plain).toMatchObject({ engine: TrainingEngine.ONNXRUNTIME, gpus: 1, nodes: 1 });
    expect(plain.channelsLast).toBeUndefined();
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, device: Device.CUDA })).config.channelsLast).toBe(true);
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, channelsLast: false })).config.channelsLast).toBe(false);
  });

  it("builds batches in the engine for pytorch pose jobs on cuda without distillation, in the trainer otherwise", () => {
    const place = (init: Partial<Init>) => resolve(minimal(init)).config.dataLoader;
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CUDA })).toBe(DataLoaderPlace.ENGINE);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CPU })).toBe(DataLoaderPlace.TRAINER);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, nodes: 2, rdzvEndpoint: "head-0:29400" })).toBe(DataLoaderPlace.TRAINER);
    expect(place({ device: Device.CUDA })).toBe(DataLoaderPlace.TRAINER);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, distillation: { teacher: { name: "demo" }, lossWeight: 1 } })).toBe(DataLoaderPlace.TRAINER);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, model: { architecture: Architecture.DETECTOR_LITE, inputSize: { width: 64, height: 64 } } })).toBe(DataLoaderPlace.TRAINER);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CPU, dataLoader: DataLoaderPlace.ENGINE })).toBe(DataLoaderPlace.ENGINE);
    expect(place({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, dataLoader: DataLoaderPlace.TRAINER })).toBe(DataLoaderPlace.TRAINER);
  });

  it("refuses TRAIN.DATA_LOADER engine where the engine cannot build the batches, saying why", () => {
    expect(resolve(minimal({ dataLoader: DataLoaderPlace.ENGINE })).problems).toEqual([
      "TRAIN.DATA_LOADER (data_loader) engine cannot be used with engine onnxruntime on cpu: the onnxruntime engine runs inside the trainer, whose loader builds its batches (use TRAIN.ENGINE pytorch)",
    ]);
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, dataLoader: DataLoaderPlace.ENGINE, distillation: { teacher: { name: "demo" }, lossWeight: 1 } })).problems).toEqual([
      "TRAIN.DATA_LOADER (data_loader) engine cannot be used with distillation: the teacher's heatmaps are computed in the trainer from the batches it builds (use TRAIN.DATA_LOADER trainer)",
    ]);
    const detector = resolve(minimal({ engine: TrainingEngine.PYTORCH, dataLoader: DataLoaderPlace.ENGINE, model: { architecture: Architecture.DETECTOR_LITE, inputSize: { width: 64, height: 64 } } }));
    expect(detector.problems).toContain("TRAIN.DATA_LOADER (data_loader) engine cannot train the detector: its whole-picture batches are built by the trainer's loader only (use TRAIN.DATA_LOADER trainer)");
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, dataLoader: 7 as DataLoaderPlace })).problems).toEqual(["TRAIN.DATA_LOADER (data_loader) must be trainer or engine, got 7"]);
  });

  it("allows TRAIN.AMP on the CPU under pytorch (bf16 autocast), and still refuses it under onnxruntime", () => {
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, mixedPrecision: true })).problems).toEqual([]);
    expect(resolve(minimal({ mixedPrecision: true })).problems).toEqual([
      "TRAIN.AMP (mixed_precision): mixed precision needs a GPU execution provider (TRAIN.DEVICE cuda or webgpu), got cpu",
    ]);
  });

  it("accepts a multi-node pytorch run on GPUs with synchronized BatchNorm", () => {
    const { problems } = resolve(minimal({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, deviceIndex: 0, gpus: 8, nodes: 2, rdzvEndpoint: "head-0:29400", syncBatchNorm: true }));
    expect(problems).toEqual([]);
  });

  it("lists every engine and device problem at once, each naming the engine, the device and why", () => {
    const onnxruntime = resolve(minimal({ device: Device.CPU, deviceIndex: 2, gpus: 2, replicas: 2, nodes: 2, syncBatchNorm: true, channelsLast: true, model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, pretrained: "../weights.bin" } }));
    expect(onnxruntime.problems).toEqual([
      "TRAIN.DEVICE (device_index) 2 names a GPU, but engine onnxruntime on cpu has none: only cuda:N takes an index",
      "TRAIN.GPUS (gpus) 2 cannot be used with engine onnxruntime on cpu: GPUS starts one torchrun process per GPU (TRAIN.ENGINE pytorch); onnxruntime trains data-parallel with TRAIN.REPLICAS",
      "TRAIN.NODES (nodes) 2 cannot be used with engine onnxruntime on cpu: multi-node training runs under torchrun (TRAIN.ENGINE pytorch)",
      "TRAIN.GPUS (gpus) 2 and TRAIN.REPLICAS (replicas) 2 cannot be combined on engine onnxruntime on cpu: data-parallel over processes or over replicas in one process, not both",
      "TRAIN.SYNC_BN (sync_batch_norm) cannot be used with engine onnxruntime on cpu: synchronized BatchNorm is the PyTorch engine's (TRAIN.ENGINE pytorch)",
      "TRAIN.CHANNELS_LAST (channels_last) applies only to TRAIN.ENGINE pytorch on cuda (tensor-core convolutions), got engine onnxruntime on cpu",
      'MODEL.PRETRAINED (model.pretrained) must be a PyTorch state_dict file (.pth or .pt) under the trainer\'s data root, got "../weights.bin"',
      'MODEL.PRETRAINED (model.pretrained) must not leave the trainer\'s data root with "..", got "../weights.bin"',
    ]);
    // 1024 x 64 is the limit itself, not past it.
    const pytorch = resolve(minimal({ engine: TrainingEngine.PYTORCH, device: Device.WEBGPU, batchSize: 1024, gpus: 64, rdzvEndpoint: "head-0:29400" }));
    expect(pytorch.problems).toEqual([
      "TRAIN.DEVICE (device) webgpu cannot be used with TRAIN.ENGINE pytorch: torch has no WebGPU device (use cuda or cpu, or TRAIN.ENGINE onnxruntime)",
      "TRAIN.RDZV_ENDPOINT (rdzv_endpoint) applies only to TRAIN.NODES > 1, got 1 node on engine pytorch on webgpu",
    ]);
    const syncAlone = resolve(minimal({ engine: TrainingEngine.PYTORCH, syncBatchNorm: true, channelsLast: true }));
    expect(syncAlone.problems).toEqual([
      "TRAIN.SYNC_BN (sync_batch_norm) needs more than one process or replica to synchronize on engine pytorch on cpu (TRAIN.GPUS, TRAIN.NODES or TRAIN.REPLICAS > 1)",
      "TRAIN.CHANNELS_LAST (channels_last) applies only to TRAIN.ENGINE pytorch on cuda (tensor-core convolutions), got engine pytorch on cpu",
    ]);
    expect(resolve(minimal({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, batchSize: 1024, gpus: 64, nodes: 2, rdzvEndpoint: "h:1" })).problems).toEqual([
      "TRAIN.BATCH_SIZE_PER_GPU x TRAIN.GPUS x TRAIN.NODES x TRAIN.REPLICAS (batch_size x gpus x nodes x replicas) = 1024 x 64 x 2 x 1 = 131072 samples per update on engine pytorch on cuda; the limit is 65536",
    ]);
    expect(resolve(minimal({ device: Device.CUDA, deviceIndex: 1 })).problems).toEqual([
      "TRAIN.DEVICE (device_index) cuda:1 cannot be used with engine onnxruntime on cuda:1: onnxruntime's CUDA provider trains on the first GPU (cuda); pick a GPU with TRAIN.ENGINE pytorch",
    ]);
  });
});
