import { clone, create } from "@bufbuild/protobuf";
import { modelNameProblems } from "@poseloop/bus";
import { COCO17, schemaProblems } from "@poseloop/pose";
import { CodecSchema, HeatmapRefinement, type KeypointSchema as KeypointSchemaProto } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DataSpecSchema, DatasetKind, SyntheticDatasetSchema } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, AugmentationSpecSchema, BlockType, Calibrator, CheckpointPolicySchema, DataLoaderPlace, Device, DistillationLoss, FuseMethod, DetectorLiteSpecSchema, HrnetSpecSchema, HrnetStageSchema, LiteSpecSchema, ModelSpecSchema, OptimizerKind, OptimizerSpecSchema, PublishMode, PublishPolicySchema, QuantizationSpecSchema, ScheduleKind, ScheduleSpecSchema, SimpleBaselineSpecSchema, TrainConfigSchema, TrainingEngine, ValidationSpecSchema, type HrnetStage, type ModelSpec, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { hrnetStages, IMAGENET_MEAN, IMAGENET_STD, keypointSchemaProto, modelConfigProblems } from "@poseloop/train";
import { modelConfigFromSpec } from "./model-config.js";
import { checkpointIdProblems, jobIdProblems, versionProblems } from "./references.js";

/**
 * Upper bounds on what one job may ask for. Past them a job fails late (a 100000x100000 input: "Invalid typed
 * array length" once the first batch is allocated) or holds a trainer for years; a submission is the place to
 * say so, naming the key.
 */
export const LIMITS = {
  batchSize: 1024,
  inputSide: 2048,
  endEpoch: 10_000,
  loaderWorkers: 64,
  replicas: 64,
  gradAccumSteps: 1024,
  intraOpThreads: 256,
  channels: 4096,
  syntheticImages: 1_000_000,
  calibrationSamples: 100_000,
  keepLast: 1000,
  gpus: 64,
  nodes: 1024,
  /** Samples of one update across every process: BATCH_SIZE_PER_GPU x GPUS x NODES x REPLICAS. */
  globalBatch: 65_536,
  deviceIndex: 1023,
} as const;

/** Names of enum values in the experiment-file vocabulary, for messages. */
const ARCHITECTURE_NAMES: Readonly<Record<number, string>> = {
  [Architecture.LITE]: "pose_lite",
  [Architecture.SIMPLE_BASELINE]: "pose_resnet",
  [Architecture.HRNET]: "pose_hrnet",
  [Architecture.DETECTOR_LITE]: "detector_lite",
};
const OPTIMIZER_NAMES: Readonly<Record<number, string>> = { [OptimizerKind.SGD]: "sgd", [OptimizerKind.ADAM]: "adam", [OptimizerKind.ADAMW]: "adamw" };
const SCHEDULE_NAMES: Readonly<Record<number, string>> = {
  [ScheduleKind.CONSTANT]: "constant",
  [ScheduleKind.MULTISTEP]: "multistep",
  [ScheduleKind.COSINE]: "cosine",
};
const DEVICE_NAMES: Readonly<Record<number, string>> = { [Device.CPU]: "cpu", [Device.CUDA]: "cuda", [Device.WEBGPU]: "webgpu" };
const ENGINE_NAMES: Readonly<Record<number, string>> = { [TrainingEngine.ONNXRUNTIME]: "onnxruntime", [TrainingEngine.PYTORCH]: "pytorch" };
const DATASET_NAMES: Readonly<Record<number, string>> = { [DatasetKind.COCO]: "coco", [DatasetKind.SYNTHETIC]: "synthetic" };
const CALIBRATOR_NAMES: Readonly<Record<number, string>> = {
  [Calibrator.MINMAX]: "minmax",
  [Calibrator.PERCENTILE]: "percentile",
  [Calibrator.ENTROPY]: "entropy",
};
const PUBLISH_MODE_NAMES: Readonly<Record<number, string>> = {
  [PublishMode.BEST]: "best",
  [PublishMode.EVERY_EPOCH]: "every_epoch",
  [PublishMode.FINAL]: "final",
  [PublishMode.NEVER]: "never",
};
const DISTILLATION_LOSS_NAMES: Readonly<Record<number, string>> = { [DistillationLoss.MSE]: "mse", [DistillationLoss.KL]: "kl" };

/** The reference pose_hrnet's first stage: one module of four bottlenecks at 64 planes, one branch. */
function hrnetStemStage(): HrnetStage {
  return create(HrnetStageSchema, { numModules: 1, numBranches: 1, block: BlockType.BOTTLENECK, numBlocks: [4], numChannels: [64], fuseMethod: FuseMethod.SUM });
}

const EXTRA_CASES: Readonly<Record<number, NonNullable<ModelSpec["extra"]["case"]>>> = {
  [Architecture.LITE]: "lite",
  [Architecture.SIMPLE_BASELINE]: "simpleBaseline",
  [Architecture.HRNET]: "hrnet",
  [Architecture.DETECTOR_LITE]: "detectorLite",
};

/** "TRAIN.LR (optimizer.lr)": the experiment-file key first, where there is one, then the proto field. */
function field(yaml: string | undefined, proto: string): string {
  return yaml === undefined ? proto : `${yaml} (${proto})`;
}

/** A number as a person wrote it: float32 fields print 0.1, not 0.10000000149011612. */
function show(value: number): string {
  return Number.isFinite(value) && Math.fround(value) === value && !Number.isInteger(value) ? String(Number(value.toPrecision(7))) : String(value);
}

function list(values: readonly number[]): string {
  return `[${values.map(show).join(", ")}]`;
}

function named(names: Readonly<Record<number, string>>, value: number): string {
  return names[value] ?? (value === 0 ? "unspecified" : `unknown value ${value}`);
}

const inRange = (value: number, min: number, max: number): boolean => Number.isFinite(value) && value >= min && value <= max;

/**
 * Applies the documented defaults of `TrainConfig` (proto/poseloop/trainer/v1/config.proto) to a copy of
 * `input` and returns it with every problem found, each naming its experiment-file key and proto field.
 * The input is not modified; resolving a resolved config changes nothing. Train only when `problems` is empty.
 */
export function resolveTrainConfig(input: TrainConfig): { config: TrainConfig; problems: string[] } {
  const config = clone(TrainConfigSchema, input);
  applyDefaults(config);
  const problems = [
    ...modelProblems(config),
    ...dataProblems(config),
    ...optimizationProblems(config),
    ...outputProblems(config),
    ...engineProblems(config),
  ];
  return { config, problems };
}

function applyDefaults(config: TrainConfig): void {
  if (config.gradAccumSteps === 0) config.gradAccumSteps = 1;
  if (config.validateEveryEpochs === 0) config.validateEveryEpochs = 1;
  if (config.logEverySteps === 0) config.logEverySteps = 10;
  if (config.loaderWorkers === 0) config.loaderWorkers = 1;
  if (config.replicas === 0) config.replicas = 1;
  if (config.device === Device.UNSPECIFIED) config.device = Device.CPU;
  if (config.engine === TrainingEngine.UNSPECIFIED) config.engine = TrainingEngine.ONNXRUNTIME;
  if (config.gpus === 0) config.gpus = 1;
  if (config.nodes === 0) config.nodes = 1;
  // Convolutions on tensor cores run faster in NHWC; on the CPU torch's NCHW kernels are the tuned ones.
  if (config.channelsLast === undefined && config.engine === TrainingEngine.PYTORCH && config.device === Device.CUDA) config.channelsLast = true;
  // A GPU outruns one trainer's loader threads, and a multi-process job would have them feed every process over
  // one pipe: there each process loads its own share. On the CPU the trainer's threads keep up, and its batches
  // are the ones both engines are proven equal on. Across nodes the engine's loader needs the images on every
  // node (shared storage), which the trainer's does not: a multi-node job asks for it.
  if (config.dataLoader === DataLoaderPlace.UNSPECIFIED) {
    const engineCan = config.engine === TrainingEngine.PYTORCH && config.model?.architecture !== Architecture.DETECTOR_LITE && config.distillation === undefined;
    config.dataLoader = engineCan && config.device === Device.CUDA && config.nodes <= 1 ? DataLoaderPlace.ENGINE : DataLoaderPlace.TRAINER;
  }

  const model = (config.model ??= create(ModelSpecSchema));
  // A detector has no keypoints: no schema, no codec (its manifest must carry neither).
  const detector = model.architecture === Architecture.DETECTOR_LITE;
  if (!detector) model.keypointSchema ??= keypointSchemaProto(COCO17);
  if (model.mean.length === 0) model.mean = [...IMAGENET_MEAN];
  if (model.std.length === 0) model.std = [...IMAGENET_STD];
  if (!detector && (model.codec === undefined || model.codec.kind.case === undefined)) model.codec = create(CodecSchema, { kind: { case: "heatmap", value: {} } });
  if (model.codec?.kind.case === "heatmap") {
    const heatmap = model.codec.kind.value;
    const input = model.inputSize;
    if (heatmap.width === 0 && heatmap.height === 0 && input !== undefined && input.width % 4 === 0 && input.height % 4 === 0) {
      heatmap.width = input.width / 4;
      heatmap.height = input.height / 4;
    }
    if (heatmap.sigma === 0) heatmap.sigma = 2;
    // The decoder of the references (MSRA / SimpleBaseline / HRNet) and of modelManifest's default.
    if (heatmap.refinement === HeatmapRefinement.UNSPECIFIED) heatmap.refinement = HeatmapRefinement.QUARTER_OFFSET;
  }
  applyModelExtraDefaults(model);

  const data = (config.data ??= create(DataSpecSchema));
  if (data.minKeypoints === 0) data.minKeypoints = 1;
  if (data.kind === DatasetKind.SYNTHETIC) {
    const synthetic = (data.synthetic ??= create(SyntheticDatasetSchema));
    if (synthetic.maxPeople === 0) synthetic.maxPeople = 4;
  }

  const optimizer = (config.optimizer ??= create(OptimizerSpecSchema));
  if (optimizer.kind === OptimizerKind.ADAM || optimizer.kind === OptimizerKind.ADAMW) {
    if (optimizer.beta1 === 0) optimizer.beta1 = 0.9;
    if (optimizer.beta2 === 0) optimizer.beta2 = 0.999;
    if (optimizer.epsilon === 0) optimizer.epsilon = 1e-8;
  }

  const schedule = (config.schedule ??= create(ScheduleSpecSchema));
  // The references always decay in steps; without steps that is a constant rate.
  if (schedule.kind === ScheduleKind.UNSPECIFIED) schedule.kind = schedule.lrSteps.length > 0 ? ScheduleKind.MULTISTEP : ScheduleKind.CONSTANT;
  if (schedule.kind === ScheduleKind.MULTISTEP && schedule.lrFactor === 0) schedule.lrFactor = 0.1;
  if (schedule.warmupSteps > 0 && schedule.warmupStartFactor === 0) schedule.warmupStartFactor = 0.001;

  // The two settings that only qualify another one take the data loader's (and HRNet's) values.
  const augmentation = (config.augmentation ??= create(AugmentationSpecSchema));
  if (augmentation.rotationProb === 0) augmentation.rotationProb = 0.6;
  if (augmentation.halfBodyMinKeypoints === 0) augmentation.halfBodyMinKeypoints = 8;

  const quantization = (config.quantization ??= create(QuantizationSpecSchema));
  if (quantization.calibrator === Calibrator.UNSPECIFIED) quantization.calibrator = Calibrator.PERCENTILE;
  if (quantization.percentile === 0) quantization.percentile = 99.99;
  if (quantization.calibrationSamples === 0) quantization.calibrationSamples = 256;
  if (quantization.maxApDrop === 0) quantization.maxApDrop = 1.0;

  const publish = (config.publish ??= create(PublishPolicySchema));
  if (publish.mode === PublishMode.UNSPECIFIED) publish.mode = PublishMode.BEST;
  const checkpoint = (config.checkpoint ??= create(CheckpointPolicySchema));
  if (checkpoint.keepLast === 0) checkpoint.keepLast = 3;
  config.validation ??= create(ValidationSpecSchema);

  const ema = config.ema;
  if (ema !== undefined) {
    // Ultralytics' ModelEMA defaults: the average of roughly the last 10000 updates, warming up over ~2000.
    if (ema.decay === 0) ema.decay = 0.9999;
    ema.warmupUpdates ??= 2000;
  }

  const distillation = config.distillation;
  if (distillation !== undefined) {
    if (distillation.loss === DistillationLoss.UNSPECIFIED) distillation.loss = DistillationLoss.MSE;
    if (distillation.loss === DistillationLoss.KL && distillation.temperature === 0) distillation.temperature = 1;
  }
}

function applyModelExtraDefaults(model: ModelSpec): void {
  switch (model.architecture) {
    case Architecture.LITE: {
      if (model.extra.case === undefined) model.extra = { case: "lite", value: create(LiteSpecSchema) };
      if (model.extra.case !== "lite") return;
      const lite = model.extra.value;
      if (lite.channels.length === 0) lite.channels = [16, 32, 64];
      if (lite.blocksPerStage === 0) lite.blocksPerStage = 1;
      return;
    }
    case Architecture.SIMPLE_BASELINE: {
      if (model.extra.case === undefined) model.extra = { case: "simpleBaseline", value: create(SimpleBaselineSpecSchema) };
      if (model.extra.case !== "simpleBaseline") return;
      const sb = model.extra.value;
      if (sb.resnetDepth === 0) sb.resnetDepth = 50;
      if (sb.deconvFilters.length === 0) sb.deconvFilters = [256, 256, 256];
      if (sb.deconvKernels.length === 0) sb.deconvKernels = [4, 4, 4];
      if (sb.finalConvKernel === 0) sb.finalConvKernel = 1;
      return;
    }
    case Architecture.DETECTOR_LITE: {
      if (model.extra.case === undefined) model.extra = { case: "detectorLite", value: create(DetectorLiteSpecSchema) };
      if (model.extra.case !== "detectorLite") return;
      const detector = model.extra.value;
      if (detector.channels.length === 0) detector.channels = [16, 32, 64, 128];
      if (detector.blocksPerStage === 0) detector.blocksPerStage = 1;
      if (detector.numClasses === 0) detector.numClasses = 1;
      return;
    }
    case Architecture.HRNET: {
      if (model.extra.case === undefined) model.extra = { case: "hrnet", value: create(HrnetSpecSchema) };
      if (model.extra.case !== "hrnet") return;
      const hrnet = model.extra.value;
      // Experiment files of the pose HRNet name STAGE2..STAGE4 only; STAGE1 is fixed by the network.
      const hasStem = hrnet.stages[0]?.numBranches === 1;
      const stem = hasStem ? (hrnet.stages[0] as HrnetStage) : hrnetStemStage();
      let branched = hasStem ? hrnet.stages.slice(1) : hrnet.stages;
      if (branched.length === 0) {
        branched = hrnetStages(hrnet.width === 0 ? 32 : hrnet.width).map((stage) =>
          create(HrnetStageSchema, {
            numModules: stage.numModules,
            numBranches: stage.numBranches,
            block: stage.block === "BOTTLENECK" ? BlockType.BOTTLENECK : BlockType.BASIC,
            numBlocks: [...stage.numBlocks],
            numChannels: [...stage.numChannels],
          }),
        );
      }
      hrnet.stages = [stem, ...branched];
      for (const stage of hrnet.stages) if (stage.fuseMethod === FuseMethod.UNSPECIFIED) stage.fuseMethod = FuseMethod.SUM;
      if (hrnet.finalConvKernel === 0) hrnet.finalConvKernel = 1;
      return;
    }
    default:
      return;
  }
}

function modelProblems(config: TrainConfig): string[] {
  const problems: string[] = [];
  const model = config.model as ModelSpec;
  const architecture = model.architecture;
  const known = ARCHITECTURE_NAMES[architecture] !== undefined;
  if (!known) problems.push(`${field("MODEL.NAME", "model.architecture")} must be pose_lite, pose_resnet, pose_hrnet or detector_lite, got ${named(ARCHITECTURE_NAMES, architecture)}`);
  const input = model.inputSize;
  const hasInput = input !== undefined && input.width > 0 && input.height > 0;
  if (!hasInput) problems.push(`${field("MODEL.IMAGE_SIZE", "model.input_size")} is required: [width, height] in pixels`);
  else if (input.width > LIMITS.inputSide || input.height > LIMITS.inputSide) {
    problems.push(`${field("MODEL.IMAGE_SIZE", "model.input_size")} must be at most ${LIMITS.inputSide} pixels each, got ${list([input.width, input.height])}`);
  }
  const widths = (yaml: string, proto: string, values: readonly number[]) => {
    if (values.some((c) => c > LIMITS.channels)) problems.push(`${field(yaml, proto)} must be at most ${LIMITS.channels} channels each, got ${list(values)}`);
  };
  if (model.extra.case === "lite") widths("MODEL.EXTRA.CHANNELS", "model.lite.channels", model.extra.value.channels);
  if (model.extra.case === "simpleBaseline") widths("MODEL.EXTRA.NUM_DECONV_FILTERS", "model.simple_baseline.deconv_filters", model.extra.value.deconvFilters);
  if (model.extra.case === "hrnet") {
    model.extra.value.stages.forEach((stage, i) => widths(`MODEL.EXTRA.STAGE${i + 1}.NUM_CHANNELS`, `model.hrnet.stages[${i}].num_channels`, stage.numChannels));
  }

  if (known && model.extra.case !== EXTRA_CASES[architecture]) {
    problems.push(`${field("MODEL.EXTRA", "model.extra")} holds ${model.extra.case ?? "no"} settings, but MODEL.NAME is ${named(ARCHITECTURE_NAMES, architecture)}`);
  }
  if (model.extra.case === "lite") {
    const { channels } = model.extra.value;
    if ((channels.length !== 3 && channels.length !== 4) || channels.some((c) => c === 0)) {
      problems.push(`${field("MODEL.EXTRA.CHANNELS", "model.lite.channels")} must be three or four positive widths (1/2, 1/4, 1/8 and optionally 1/16 of the input), got ${list(channels)}`);
    }
  }
  if (model.extra.case === "simpleBaseline") {
    const sb = model.extra.value;
    if (sb.finalConvKernel !== 1 && sb.finalConvKernel !== 3) {
      problems.push(`${field("MODEL.EXTRA.FINAL_CONV_KERNEL", "model.simple_baseline.final_conv_kernel")} must be 1 or 3, got ${sb.finalConvKernel}`);
    }
    if (sb.deconvFilters.some((f) => f === 0)) problems.push(`${field("MODEL.EXTRA.NUM_DECONV_FILTERS", "model.simple_baseline.deconv_filters")} must be positive, got ${list(sb.deconvFilters)}`);
  }
  if (model.extra.case === "hrnet") {
    const hrnet = model.extra.value;
    if (hrnet.finalConvKernel !== 1 && hrnet.finalConvKernel !== 3) {
      problems.push(`${field("MODEL.EXTRA.FINAL_CONV_KERNEL", "model.hrnet.final_conv_kernel")} must be 1 or 3, got ${hrnet.finalConvKernel}`);
    }
    hrnet.stages.forEach((stage, i) => problems.push(...hrnetStageProblems(stage, i)));
    const width = hrnet.stages[1]?.numChannels[0];
    if (hrnet.width !== 0 && width !== undefined && width !== hrnet.width) {
      problems.push(`model.hrnet.width ${hrnet.width} contradicts MODEL.EXTRA.STAGE2.NUM_CHANNELS (model.hrnet.stages[1].num_channels), which starts at ${width}`);
    }
  }
  // The zoo's own rules (input divisibility, ResNet depth, deconvolution kernels, HRNet branch counts).
  if (known && hasInput) problems.push(...modelConfigProblems(modelConfigFromSpec(model)).map((problem) => `MODEL: ${problem}`));

  const codec = model.codec?.kind;
  if (codec?.case === "heatmap") {
    const heatmap = codec.value;
    const matches = (stride: number) => input !== undefined && heatmap.width * stride === input.width && heatmap.height * stride === input.height;
    if (hasInput && !matches(4) && !(architecture === Architecture.LITE && matches(2))) {
      const quarter = `MODEL.IMAGE_SIZE / 4 = ${list([input.width / 4, input.height / 4])}`;
      const allowed = architecture === Architecture.LITE ? `${quarter} or, for pose_lite, / 2 = ${list([input.width / 2, input.height / 2])}` : quarter;
      problems.push(`${field("MODEL.HEATMAP_SIZE", "model.codec.heatmap")} must be ${allowed}, got ${list([heatmap.width, heatmap.height])}`);
    }
    if (!(heatmap.sigma > 0) || !Number.isFinite(heatmap.sigma)) problems.push(`${field("MODEL.SIGMA", "model.codec.heatmap.sigma")} must be > 0, got ${show(heatmap.sigma)}`);
  } else if (architecture !== Architecture.DETECTOR_LITE) {
    problems.push(`${field(undefined, "model.codec")} must be a heatmap codec: the zoo's models output heatmaps, got ${codec?.case ?? "none"}`);
  }
  if (architecture === Architecture.DETECTOR_LITE) {
    if (codec !== undefined) problems.push(`${field(undefined, "model.codec")}: a detector has no keypoint codec (its CenterNet head is its own), got ${codec.case ?? "none"}`);
    if (model.keypointSchema !== undefined) problems.push(`${field(undefined, "model.keypoint_schema")}: a detector has no keypoints`);
    if (config.distillation !== undefined) problems.push(`${field("DISTILL", "distillation")}: a detector cannot learn from a pose model's heatmaps`);
    if (config.validation?.flipTest === true) problems.push(`${field("TEST.FLIP_TEST", "validation.flip_test")}: the flip test averages keypoint heatmaps; a detector is validated without it`);
    if (model.extra.case === "detectorLite") {
      const { channels, numClasses } = model.extra.value;
      if ((channels.length !== 3 && channels.length !== 4) || channels.some((c) => c === 0)) {
        problems.push(`${field("MODEL.EXTRA.CHANNELS", "model.detector_lite.channels")} must be three or four positive widths (1/2, 1/4, 1/8 and optionally 1/16 of the input), got ${list(channels)}`);
      }
      widths("MODEL.EXTRA.CHANNELS", "model.detector_lite.channels", channels);
      if (numClasses !== 1) problems.push(`model.detector_lite.num_classes must be 1: the trainer's datasets label people only, got ${numClasses}`);
    }
    return [...problems, ...normalizationProblems(model)];
  }

  const schema = model.keypointSchema as KeypointSchemaProto;
  problems.push(
    ...schemaProblems({
      name: schema.name,
      names: schema.keypointNames,
      skeleton: schema.skeleton.map((limb) => [limb.fromIndex, limb.toIndex] as const),
      flipPairs: schema.flipPairs.map((pair) => [pair.leftIndex, pair.rightIndex] as const),
      sigmas: schema.oksSigmas,
    }).map((problem) => `model.keypoint_schema: ${problem}`),
  );
  return [...problems, ...normalizationProblems(model)];
}

function normalizationProblems(model: ModelSpec): string[] {
  const problems: string[] = [];
  if (model.mean.length !== 3 || model.std.length !== 3) {
    problems.push(`model.mean and model.std need one value per RGB channel, got ${model.mean.length} and ${model.std.length}`);
  }
  if (model.std.some((s) => !(s > 0))) problems.push(`model.std must be positive, got ${list(model.std)}`);
  if (model.mean.some((m) => !Number.isFinite(m))) problems.push(`model.mean must be finite, got ${list(model.mean)}`);
  return problems;
}

function hrnetStageProblems(stage: HrnetStage, index: number): string[] {
  const yaml = `MODEL.EXTRA.STAGE${index + 1}`;
  const proto = `model.hrnet.stages[${index}]`;
  const problems: string[] = [];
  if (index === 0) {
    const fixed = stage.numModules === 1 && stage.numBranches === 1 && stage.block === BlockType.BOTTLENECK && stage.numBlocks.length === 1 && stage.numBlocks[0] === 4;
    if (!fixed) problems.push(`${field(yaml, proto)} must be pose_hrnet's first stage: NUM_MODULES 1, NUM_BRANCHES 1, BLOCK BOTTLENECK, NUM_BLOCKS [4]`);
    if (stage.numChannels.length !== 1 || stage.numChannels[0] === 0) problems.push(`${field(`${yaml}.NUM_CHANNELS`, `${proto}.num_channels`)} must be one positive width, got ${list(stage.numChannels)}`);
    return problems;
  }
  if (stage.numModules === 0) problems.push(`${field(`${yaml}.NUM_MODULES`, `${proto}.num_modules`)} must be > 0`);
  if (stage.block !== BlockType.BASIC && stage.block !== BlockType.BOTTLENECK) problems.push(`${field(`${yaml}.BLOCK`, `${proto}.block`)} must be BASIC or BOTTLENECK`);
  if (stage.fuseMethod !== FuseMethod.SUM) problems.push(`${field(`${yaml}.FUSE_METHOD`, `${proto}.fuse_method`)} must be SUM`);
  if (stage.numBlocks.some((b) => b === 0)) problems.push(`${field(`${yaml}.NUM_BLOCKS`, `${proto}.num_blocks`)} must be positive, got ${list(stage.numBlocks)}`);
  if (stage.numChannels.some((c) => c === 0)) problems.push(`${field(`${yaml}.NUM_CHANNELS`, `${proto}.num_channels`)} must be positive, got ${list(stage.numChannels)}`);
  return problems;
}

function dataProblems(config: TrainConfig): string[] {
  const problems: string[] = [];
  const data = config.data!;
  const augmentation = config.augmentation!;
  const validation = config.validation!;
  const hasValFraction = data.valFraction > 0;
  if (!inRange(data.valFraction, 0, 1) || data.valFraction === 1) {
    problems.push(`${field("DATASET.VAL_FRACTION", "data.val_fraction")} must be in [0, 1), got ${show(data.valFraction)}`);
  }
  const keypoints = config.model?.keypointSchema?.keypointNames.length ?? COCO17.names.length;
  if (data.minKeypoints > keypoints) problems.push(`${field("DATASET.MIN_KEYPOINTS", "data.min_keypoints")} must be at most the schema's ${keypoints} keypoints, got ${data.minKeypoints}`);

  switch (data.kind) {
    case DatasetKind.COCO: {
      const coco = data.coco;
      if (coco === undefined || coco.root.length === 0) {
        problems.push(`${field("DATASET.ROOT", "data.coco.root")} is required for a COCO dataset: a folder under the trainer's data root`);
      }
      if (coco === undefined || coco.trainAnnotations.length === 0 || coco.trainImages.length === 0) {
        problems.push(`${field("DATASET.TRAIN_SET", "data.coco.train_annotations, data.coco.train_images")} is required for a COCO dataset`);
      }
      const hasValAnnotations = (coco?.valAnnotations.length ?? 0) > 0;
      const hasValImages = (coco?.valImages.length ?? 0) > 0;
      if (hasValAnnotations !== hasValImages) problems.push(`${field("DATASET.TEST_SET", "data.coco.val_annotations, data.coco.val_images")} needs both the annotations and the images`);
      if (!hasValAnnotations && !hasValImages && !hasValFraction) {
        problems.push(`${field("DATASET.TEST_SET", "data.coco.val_annotations")} or DATASET.VAL_FRACTION is required: the run validates every TRAIN.VALIDATE_EVERY epochs`);
      }
      // A detector is validated on whole pictures: it finds the people itself.
      if (!validation.useGtBoxes && (coco?.valDetections.length ?? 0) === 0 && config.model?.architecture !== Architecture.DETECTOR_LITE) {
        problems.push(`${field("TEST.COCO_BBOX_FILE", "data.coco.val_detections")} is required when TEST.USE_GT_BBOX is false`);
      }
      break;
    }
    case DatasetKind.SYNTHETIC: {
      const synthetic = data.synthetic!;
      if (synthetic.trainImages === 0) problems.push(`${field("DATASET.SYNTHETIC.TRAIN_IMAGES", "data.synthetic.train_images")} must be > 0`);
      if (synthetic.trainImages > LIMITS.syntheticImages) {
        problems.push(`${field("DATASET.SYNTHETIC.TRAIN_IMAGES", "data.synthetic.train_images")} must be at most ${LIMITS.syntheticImages}, got ${synthetic.trainImages}`);
      }
      if (synthetic.valImages > LIMITS.syntheticImages) {
        problems.push(`${field("DATASET.SYNTHETIC.VAL_IMAGES", "data.synthetic.val_images")} must be at most ${LIMITS.syntheticImages}, got ${synthetic.valImages}`);
      }
      if (synthetic.valImages === 0 && !hasValFraction) {
        problems.push(`${field("DATASET.SYNTHETIC.VAL_IMAGES", "data.synthetic.val_images")} or DATASET.VAL_FRACTION must be > 0: the run validates every TRAIN.VALIDATE_EVERY epochs`);
      }
      if (!inRange(synthetic.imageWidth, 16, 8192) || !inRange(synthetic.imageHeight, 16, 8192)) {
        problems.push(
          `${field("DATASET.SYNTHETIC.IMAGE_SIZE", "data.synthetic.image_width, image_height")} must be 16 to 8192 pixels each, got ${list([synthetic.imageWidth, synthetic.imageHeight])}`,
        );
      }
      if (synthetic.maxPeople > 32) problems.push(`${field("DATASET.SYNTHETIC.MAX_PEOPLE", "data.synthetic.max_people")} must be 1 to 32, got ${synthetic.maxPeople}`);
      if (!inRange(synthetic.occlusion, 0, 1)) problems.push(`${field("DATASET.SYNTHETIC.OCCLUSION", "data.synthetic.occlusion")} must be in [0, 1], got ${show(synthetic.occlusion)}`);
      if (synthetic.seed > BigInt(Number.MAX_SAFE_INTEGER)) {
        problems.push(`${field("DATASET.SYNTHETIC.SEED", "data.synthetic.seed")} must be at most ${Number.MAX_SAFE_INTEGER}, got ${synthetic.seed}`);
      }
      // A detector is validated on whole pictures, never on person boxes.
      if (!validation.useGtBoxes && config.model?.architecture !== Architecture.DETECTOR_LITE) {
        problems.push(`${field("TEST.USE_GT_BBOX", "validation.use_gt_boxes")} must be true for a synthetic dataset: it has no person detections`);
      }
      break;
    }
    default:
      problems.push(`${field("DATASET.DATASET", "data.kind")} must be coco or synthetic, got ${named(DATASET_NAMES, data.kind)}`);
  }

  const probability = (value: number, yaml: string | undefined, proto: string) => {
    if (!inRange(value, 0, 1)) problems.push(`${field(yaml, `augmentation.${proto}`)} must be a probability in [0, 1], got ${show(value)}`);
  };
  if (!inRange(augmentation.rotationFactor, 0, 90)) {
    problems.push(`${field("DATASET.ROT_FACTOR", "augmentation.rotation_factor")} must be 0 to 90 degrees, got ${show(augmentation.rotationFactor)}`);
  }
  probability(augmentation.rotationProb, undefined, "rotation_prob");
  if (!inRange(augmentation.scaleFactor, 0, 1) || augmentation.scaleFactor === 1) {
    problems.push(`${field("DATASET.SCALE_FACTOR", "augmentation.scale_factor")} must be in [0, 1), got ${show(augmentation.scaleFactor)}`);
  }
  probability(augmentation.halfBodyProb, "DATASET.PROB_HALF_BODY", "half_body_prob");
  probability(augmentation.occlusionProb, "TRAIN.OCCLUSION_PROB", "occlusion_prob");
  if (!inRange(augmentation.colorJitter, 0, 1)) problems.push(`${field("TRAIN.COLOR_JITTER", "augmentation.color_jitter")} must be in [0, 1], got ${show(augmentation.colorJitter)}`);
  return problems;
}

function optimizationProblems(config: TrainConfig): string[] {
  const problems: string[] = [];
  const optimizer = config.optimizer!;
  const schedule = config.schedule!;
  if (!(optimizer.lr > 0) || !Number.isFinite(optimizer.lr)) problems.push(`${field("TRAIN.LR", "optimizer.lr")} must be > 0, got ${show(optimizer.lr)}`);
  if (OPTIMIZER_NAMES[optimizer.kind] === undefined) {
    problems.push(`${field("TRAIN.OPTIMIZER", "optimizer.kind")} must be sgd, adam or adamw, got ${named(OPTIMIZER_NAMES, optimizer.kind)}`);
  }
  if (!inRange(optimizer.momentum, 0, 1) || optimizer.momentum === 1) {
    problems.push(`${field("TRAIN.MOMENTUM", "optimizer.momentum")} must be in [0, 1), got ${show(optimizer.momentum)}`);
  }
  if (optimizer.kind === OptimizerKind.SGD && optimizer.nesterov && optimizer.momentum === 0) {
    problems.push(`${field("TRAIN.NESTEROV", "optimizer.nesterov")} needs TRAIN.MOMENTUM > 0`);
  }
  if (!(optimizer.weightDecay >= 0) || !Number.isFinite(optimizer.weightDecay)) problems.push(`${field("TRAIN.WD", "optimizer.weight_decay")} must be >= 0, got ${show(optimizer.weightDecay)}`);
  if (optimizer.kind === OptimizerKind.ADAM || optimizer.kind === OptimizerKind.ADAMW) {
    if (!inRange(optimizer.beta1, 0, 1) || optimizer.beta1 === 1) problems.push(`${field("TRAIN.GAMMA1", "optimizer.beta1")} must be in [0, 1), got ${show(optimizer.beta1)}`);
    if (!inRange(optimizer.beta2, 0, 1) || optimizer.beta2 === 1) problems.push(`${field("TRAIN.GAMMA2", "optimizer.beta2")} must be in [0, 1), got ${show(optimizer.beta2)}`);
    if (!(optimizer.epsilon > 0) || !Number.isFinite(optimizer.epsilon)) problems.push(`${field(undefined, "optimizer.epsilon")} must be > 0, got ${show(optimizer.epsilon)}`);
  }

  if (config.batchSize === 0) problems.push(`${field("TRAIN.BATCH_SIZE_PER_GPU", "batch_size")} must be > 0, got 0`);
  const atMost = (value: number, limit: number, yaml: string | undefined, proto: string) => {
    if (value > limit) problems.push(`${field(yaml, proto)} must be at most ${limit}, got ${value}`);
  };
  atMost(config.batchSize, LIMITS.batchSize, "TRAIN.BATCH_SIZE_PER_GPU", "batch_size");
  atMost(config.replicas, LIMITS.replicas, "TRAIN.REPLICAS", "replicas");
  atMost(config.gradAccumSteps, LIMITS.gradAccumSteps, "TRAIN.GRAD_ACCUM_STEPS", "grad_accum_steps");
  atMost(config.loaderWorkers, LIMITS.loaderWorkers, "WORKERS", "loader_workers");
  atMost(config.intraOpThreads, LIMITS.intraOpThreads, "TRAIN.INTRA_OP_THREADS", "intra_op_threads");
  atMost(config.endEpoch, LIMITS.endEpoch, "TRAIN.END_EPOCH", "end_epoch");
  if (config.replicas > 1 && config.gradAccumSteps > 1) {
    problems.push(`${field("TRAIN.REPLICAS", "replicas")} ${config.replicas} and ${field("TRAIN.GRAD_ACCUM_STEPS", "grad_accum_steps")} ${config.gradAccumSteps} cannot be combined: use one or the other`);
  }
  if (!(config.clipGradNorm >= 0) || !Number.isFinite(config.clipGradNorm)) {
    problems.push(`${field("TRAIN.CLIP_GRAD", "clip_grad_norm")} must be >= 0 (0: no clipping), got ${show(config.clipGradNorm)}`);
  }
  const { beginEpoch: begin, endEpoch: end } = config;
  if (end <= begin) problems.push(`${field("TRAIN.END_EPOCH", "end_epoch")} must be greater than TRAIN.BEGIN_EPOCH (begin_epoch) ${begin}, got ${end}`);

  const steps = schedule.lrSteps;
  const lrStep = field("TRAIN.LR_STEP", "schedule.lr_steps");
  switch (schedule.kind) {
    case ScheduleKind.MULTISTEP:
      if (steps.some((step, i) => i > 0 && step <= (steps[i - 1] as number))) problems.push(`${lrStep} must be strictly increasing, got ${list(steps)}`);
      if (end > begin && steps.some((step) => step < begin || step >= end)) {
        problems.push(`${lrStep} must lie in [TRAIN.BEGIN_EPOCH, TRAIN.END_EPOCH) = [${begin}, ${end}), got ${list(steps)}`);
      }
      if (!inRange(schedule.lrFactor, 0, 1) || schedule.lrFactor === 0) problems.push(`${field("TRAIN.LR_FACTOR", "schedule.lr_factor")} must be in (0, 1], got ${show(schedule.lrFactor)}`);
      break;
    case ScheduleKind.COSINE:
    case ScheduleKind.CONSTANT:
      if (steps.length > 0) problems.push(`${lrStep} applies only to TRAIN.LR_SCHEDULE multistep, got ${named(SCHEDULE_NAMES, schedule.kind)}`);
      break;
    default:
      problems.push(`${field("TRAIN.LR_SCHEDULE", "schedule.kind")} must be multistep, cosine or constant, got ${named(SCHEDULE_NAMES, schedule.kind)}`);
  }
  if (!(schedule.minLr >= 0) || !Number.isFinite(schedule.minLr)) {
    problems.push(`${field("TRAIN.MIN_LR", "schedule.min_lr")} must be >= 0, got ${show(schedule.minLr)}`);
  } else if (schedule.kind === ScheduleKind.COSINE && optimizer.lr > 0 && schedule.minLr >= optimizer.lr) {
    problems.push(`${field("TRAIN.MIN_LR", "schedule.min_lr")} must be below TRAIN.LR ${show(optimizer.lr)}, got ${show(schedule.minLr)}`);
  }
  if (schedule.warmupSteps > 0 && (!inRange(schedule.warmupStartFactor, 0, 1) || schedule.warmupStartFactor === 0)) {
    problems.push(`${field("TRAIN.WARMUP_FACTOR", "schedule.warmup_start_factor")} must be in (0, 1], got ${show(schedule.warmupStartFactor)}`);
  }
  const ema = config.ema;
  if (ema !== undefined && !(ema.decay > 0 && ema.decay < 1)) problems.push(`${field("TRAIN.EMA.DECAY", "ema.decay")} must be in (0, 1), got ${show(ema.decay)}`);

  if (DEVICE_NAMES[config.device] === undefined) problems.push(`${field("TRAIN.DEVICE", "device")} must be cpu, cuda or webgpu, got ${named(DEVICE_NAMES, config.device)}`);
  // The PyTorch engine runs bf16 autocast on the CPU; onnxruntime's CPU provider has no fast fp16.
  if (config.mixedPrecision && config.device === Device.CPU && config.engine !== TrainingEngine.PYTORCH) {
    problems.push(`${field("TRAIN.AMP", "mixed_precision")}: mixed precision needs a GPU execution provider (TRAIN.DEVICE cuda or webgpu), got cpu`);
  }

  const distillation = config.distillation;
  if (distillation !== undefined) {
    const teacher = distillation.teacher?.name ?? "";
    problems.push(...modelNameProblems(teacher).map((problem) => `${field("DISTILL.TEACHER_MODEL", "distillation.teacher.name")}: ${problem}`));
    problems.push(...versionProblems(distillation.teacher?.version ?? "").map((problem) => `${field("DISTILL.TEACHER_VERSION", "distillation.teacher.version")}: ${problem}`));
    if (!(distillation.lossWeight > 0) || !Number.isFinite(distillation.lossWeight)) {
      problems.push(`${field("DISTILL.WEIGHT", "distillation.loss_weight")} must be > 0, got ${show(distillation.lossWeight)}`);
    }
    if (DISTILLATION_LOSS_NAMES[distillation.loss] === undefined) {
      problems.push(`${field("DISTILL.LOSS", "distillation.loss")} must be mse or kl, got ${named(DISTILLATION_LOSS_NAMES, distillation.loss)}`);
    }
    if (distillation.loss === DistillationLoss.KL && (!(distillation.temperature > 0) || !Number.isFinite(distillation.temperature))) {
      problems.push(`${field("DISTILL.TEMPERATURE", "distillation.temperature")} must be > 0, got ${show(distillation.temperature)}`);
    }
  }

  const init = config.initFrom;
  if (init !== undefined) {
    if (init.source.case === "model") {
      problems.push(...modelNameProblems(init.source.value.name).map((problem) => `${field("INIT_FROM.MODEL", "init_from.model.name")}: ${problem}`));
      problems.push(...versionProblems(init.source.value.version).map((problem) => `${field("INIT_FROM.VERSION", "init_from.model.version")}: ${problem}`));
    } else if (init.source.case === "checkpoint") {
      const { jobId, checkpointId } = init.source.value;
      if (jobId.length === 0 || checkpointId.length === 0) {
        problems.push(`${field("INIT_FROM.JOB_ID and INIT_FROM.CHECKPOINT_ID", "init_from.checkpoint")} are both required to start from a checkpoint`);
      }
      // These become KV keys and object names; only the shapes the trainer itself issues get that far.
      if (jobId.length > 0) problems.push(...jobIdProblems(jobId).map((problem) => `${field("INIT_FROM.JOB_ID", "init_from.checkpoint.job_id")}: ${problem}`));
      if (checkpointId.length > 0) problems.push(...checkpointIdProblems(checkpointId).map((problem) => `${field("INIT_FROM.CHECKPOINT_ID", "init_from.checkpoint.checkpoint_id")}: ${problem}`));
    } else if (init.skipLayers.length > 0) {
      problems.push(`${field("INIT_FROM.SKIP_LAYERS", "init_from.skip_layers")} needs INIT_FROM.MODEL or INIT_FROM.JOB_ID to start from`);
    }
  }
  return problems;
}

function outputProblems(config: TrainConfig): string[] {
  const problems: string[] = [];
  const validation = config.validation!;
  if (!inRange(validation.oksThreshold, 0, 1)) problems.push(`${field("TEST.OKS_THRE", "validation.oks_threshold")} must be in [0, 1], got ${show(validation.oksThreshold)}`);
  if (!inRange(validation.minDetectionScore, 0, 1)) {
    problems.push(`${field("TEST.IMAGE_THRE", "validation.min_detection_score")} must be in [0, 1], got ${show(validation.minDetectionScore)}`);
  }
  if (!inRange(validation.keypointScoreThreshold, 0, 1)) {
    problems.push(`${field("TEST.IN_VIS_THRE", "validation.keypoint_score_threshold")} must be in [0, 1], got ${show(validation.keypointScoreThreshold)}`);
  }

  const quantization = config.quantization!;
  if (CALIBRATOR_NAMES[quantization.calibrator] === undefined) {
    problems.push(`${field("QUANT.CALIBRATOR", "quantization.calibrator")} must be minmax, percentile or entropy, got ${named(CALIBRATOR_NAMES, quantization.calibrator)}`);
  }
  if (!inRange(quantization.percentile, 0, 100) || quantization.percentile === 0) {
    problems.push(`${field("QUANT.PERCENTILE", "quantization.percentile")} must be in (0, 100], got ${show(quantization.percentile)}`);
  }
  if (!inRange(quantization.maxApDrop, 0, 100)) problems.push(`${field("QUANT.MAX_AP_DROP", "quantization.max_ap_drop")} must be 0 to 100 AP points, got ${show(quantization.maxApDrop)}`);
  if (quantization.fp32Nodes.some((node) => node.length === 0)) problems.push(`${field("QUANT.FP32_NODES", "quantization.fp32_nodes")} must not contain empty names`);
  if (quantization.calibrationSamples > LIMITS.calibrationSamples) {
    problems.push(`${field("QUANT.CALIBRATION_SAMPLES", "quantization.calibration_samples")} must be at most ${LIMITS.calibrationSamples}, got ${quantization.calibrationSamples}`);
  }
  const keepLast = config.checkpoint?.keepLast ?? 0;
  if (keepLast > LIMITS.keepLast) problems.push(`${field("CHECKPOINT.KEEP_LAST", "checkpoint.keep_last")} must be at most ${LIMITS.keepLast}, got ${keepLast}`);

  const publish = config.publish!;
  if (PUBLISH_MODE_NAMES[publish.mode] === undefined) {
    problems.push(`${field("PUBLISH.MODE", "publish.mode")} must be best, every_epoch, final or never, got ${named(PUBLISH_MODE_NAMES, publish.mode)}`);
  } else if (publish.mode !== PublishMode.NEVER) {
    problems.push(...modelNameProblems(publish.modelName).map((problem) => `${field("PUBLISH.MODEL_NAME", "publish.model_name")}: ${problem}`));
  }
  return problems;
}

/** "engine pytorch on cuda:1": what a device problem is about. */
function where(config: TrainConfig): string {
  const device = config.device === Device.CUDA && config.deviceIndex > 0 ? `cuda:${config.deviceIndex}` : named(DEVICE_NAMES, config.device);
  return `engine ${named(ENGINE_NAMES, config.engine)} on ${device}`;
}

/**
 * The engine and its devices and processes: what each engine can run on, and the PyTorch engine's torchrun
 * settings, which mean nothing to onnxruntime (it trains data-parallel with TRAIN.REPLICAS, in threads).
 */
function engineProblems(config: TrainConfig): string[] {
  const problems: string[] = [];
  const at = where(config);
  const pytorch = config.engine === TrainingEngine.PYTORCH;
  if (ENGINE_NAMES[config.engine] === undefined) {
    problems.push(`${field("TRAIN.ENGINE", "engine")} must be onnxruntime or pytorch, got ${named(ENGINE_NAMES, config.engine)}`);
    return problems;
  }
  if (pytorch && config.device === Device.WEBGPU) {
    problems.push(`${field("TRAIN.DEVICE", "device")} webgpu cannot be used with TRAIN.ENGINE pytorch: torch has no WebGPU device (use cuda or cpu, or TRAIN.ENGINE onnxruntime)`);
  }
  if (config.deviceIndex > 0 && config.device !== Device.CUDA) {
    problems.push(`${field("TRAIN.DEVICE", "device_index")} ${config.deviceIndex} names a GPU, but ${at} has none: only cuda:N takes an index`);
  } else if (config.deviceIndex > LIMITS.deviceIndex) {
    problems.push(`${field("TRAIN.DEVICE", "device_index")} must be at most ${LIMITS.deviceIndex}, got cuda:${config.deviceIndex}`);
  } else if (config.deviceIndex > 0 && !pytorch) {
    problems.push(`${field("TRAIN.DEVICE", "device_index")} cuda:${config.deviceIndex} cannot be used with ${at}: onnxruntime's CUDA provider trains on the first GPU (cuda); pick a GPU with TRAIN.ENGINE pytorch`);
  }
  if (config.gpus > LIMITS.gpus) problems.push(`${field("TRAIN.GPUS", "gpus")} must be at most ${LIMITS.gpus}, got ${config.gpus}`);
  if (config.nodes > LIMITS.nodes) problems.push(`${field("TRAIN.NODES", "nodes")} must be at most ${LIMITS.nodes}, got ${config.nodes}`);
  if (!pytorch && config.gpus > 1) {
    problems.push(`${field("TRAIN.GPUS", "gpus")} ${config.gpus} cannot be used with ${at}: GPUS starts one torchrun process per GPU (TRAIN.ENGINE pytorch); onnxruntime trains data-parallel with TRAIN.REPLICAS`);
  }
  if (!pytorch && config.nodes > 1) {
    problems.push(`${field("TRAIN.NODES", "nodes")} ${config.nodes} cannot be used with ${at}: multi-node training runs under torchrun (TRAIN.ENGINE pytorch)`);
  }
  if (config.gpus > 1 && config.replicas > 1) {
    problems.push(`${field("TRAIN.GPUS", "gpus")} ${config.gpus} and ${field("TRAIN.REPLICAS", "replicas")} ${config.replicas} cannot be combined on ${at}: data-parallel over processes or over replicas in one process, not both`);
  }
  // Without TRAIN.RDZV_ENDPOINT the trainer that runs node 0 hosts the rendezvous at an address of its own
  // (POSELOOP_RDZV_HOST and a free port) and tells the other nodes' trainers.
  if (config.rdzvEndpoint !== "" && config.nodes <= 1) {
    problems.push(`${field("TRAIN.RDZV_ENDPOINT", "rdzv_endpoint")} applies only to TRAIN.NODES > 1, got ${config.nodes} node on ${at}`);
  } else if (config.rdzvEndpoint !== "" && !/^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):\d{1,5}$/.test(config.rdzvEndpoint)) {
    problems.push(`${field("TRAIN.RDZV_ENDPOINT", "rdzv_endpoint")} must be host:port, got ${JSON.stringify(config.rdzvEndpoint.slice(0, 60))}`);
  }
  const processes = Math.max(1, config.gpus) * Math.max(1, config.nodes) * Math.max(1, config.replicas);
  if (config.batchSize > 0 && config.batchSize * processes > LIMITS.globalBatch) {
    problems.push(
      `TRAIN.BATCH_SIZE_PER_GPU x TRAIN.GPUS x TRAIN.NODES x TRAIN.REPLICAS (batch_size x gpus x nodes x replicas) = ${config.batchSize} x ${config.gpus} x ${config.nodes} x ${config.replicas} = ${config.batchSize * processes} samples per update on ${at}; the limit is ${LIMITS.globalBatch}`,
    );
  }
  if (config.syncBatchNorm && !pytorch) {
    problems.push(`${field("TRAIN.SYNC_BN", "sync_batch_norm")} cannot be used with ${at}: synchronized BatchNorm is the PyTorch engine's (TRAIN.ENGINE pytorch)`);
  } else if (config.syncBatchNorm && processes <= 1) {
    problems.push(`${field("TRAIN.SYNC_BN", "sync_batch_norm")} needs more than one process or replica to synchronize on ${at} (TRAIN.GPUS, TRAIN.NODES or TRAIN.REPLICAS > 1)`);
  }
  if (config.dataLoader === DataLoaderPlace.ENGINE) {
    const key = field("TRAIN.DATA_LOADER", "data_loader");
    if (!pytorch) problems.push(`${key} engine cannot be used with ${at}: the onnxruntime engine runs inside the trainer, whose loader builds its batches (use TRAIN.ENGINE pytorch)`);
    if (config.model?.architecture === Architecture.DETECTOR_LITE) problems.push(`${key} engine cannot train the detector: its whole-picture batches are built by the trainer's loader only (use TRAIN.DATA_LOADER trainer)`);
    if (config.distillation !== undefined) problems.push(`${key} engine cannot be used with distillation: the teacher's heatmaps are computed in the trainer from the batches it builds (use TRAIN.DATA_LOADER trainer)`);
  } else if (config.dataLoader !== DataLoaderPlace.TRAINER) {
    problems.push(`${field("TRAIN.DATA_LOADER", "data_loader")} must be trainer or engine, got ${config.dataLoader}`);
  }
  if (config.channelsLast === true && !(pytorch && config.device === Device.CUDA)) {
    problems.push(`${field("TRAIN.CHANNELS_LAST", "channels_last")} applies only to TRAIN.ENGINE pytorch on cuda (tensor-core convolutions), got ${at}`);
  }

  const pretrained = config.model?.pretrained ?? "";
  // A detector job that cannot run is refused here (a config message; the experiment file's parser refuses the
  // key), never queued to fail at its start.
  if (config.model?.architecture === Architecture.DETECTOR_LITE && pretrained !== "") {
    problems.push(`${field("MODEL.PRETRAINED", "model.pretrained")}: the detector has no PyTorch weights to import (the importer maps the pose models' names); start it from scratch or INIT_FROM a detector`);
  }
  if (pretrained !== "") {
    const key = field("MODEL.PRETRAINED", "model.pretrained");
    if (!/\.(pth|pt)$/i.test(pretrained)) problems.push(`${key} must be a PyTorch state_dict file (.pth or .pt) under the trainer's data root, got ${JSON.stringify(pretrained.slice(0, 60))}`);
    if (pretrained.split(/[\\/]/).includes("..")) problems.push(`${key} must not leave the trainer's data root with "..", got ${JSON.stringify(pretrained.slice(0, 60))}`);
    if (config.initFrom?.source.case !== undefined) problems.push(`${key} and INIT_FROM both choose the starting weights: give one`);
  }
  return problems;
}
