import type { Value } from "@poseloop/onnx";
import type { ForwardContext } from "../nn/context.js";
import { Registry } from "../nn/parameters.js";
import type { Sym } from "../tape.js";
import { DETECTOR_STRIDE, DetectorIo, DetectorLite, type DetectorLiteConfig } from "./detector-lite.js";
import { Hrnet, hrnetStages, type HrnetConfig } from "./hrnet.js";
import { LitePose, type LiteConfig } from "./lite.js";
import { deconvPadding, RESNET_DEPTHS, SimpleBaseline, type SimpleBaselineConfig } from "./simple-baseline.js";

export type Architecture = "lite" | "simplebaseline" | "hrnet" | "detector-lite";

/** A model of the zoo — a heatmap model or the person detector — as plain data (it crosses into the StepRunner's worker). */
export interface ModelConfig {
  readonly architecture: Architecture;
  /** Input crop in pixels (MODEL.IMAGE_SIZE), e.g. 192 x 256. */
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** Heatmaps of a pose model; the detector ignores it. */
  readonly numKeypoints: number;
  readonly lite?: Partial<LiteConfig>;
  readonly simpleBaseline?: Partial<SimpleBaselineConfig>;
  /** `width` picks the reference layout HRNet-W<width>; `stages` overrides it. */
  readonly hrnet?: Partial<HrnetConfig> & { readonly width?: number };
  /** The detector's ("detector-lite"). Defaults: channels [16, 32, 64, 128], 1 block per stage, 1 class, head as wide as the 1/4 features, weights 0.1 and 1. */
  readonly detector?: Partial<DetectorLiteConfig>;
}

/** A tensor a model's training loss reads from every micro-batch besides the images. */
export interface LossInput {
  /** Its name in the training graphs and in StepBatch.lossInputs. */
  readonly name: string;
  /** The shape of one sample's part, e.g. [1, h, w]. */
  readonly shape: readonly number[];
}

/**
 * How a model that is not a heatmap model trains and exports (the detector): its loss inputs, its loss, and
 * its named outputs. A model without one trains with JointsMSE on "targets" / "target_weights" and exports
 * one "heatmaps" output.
 */
export interface ModelObjective {
  readonly lossInputs: readonly LossInput[];
  /** The exported outputs by name, in order, of a forward pass in `ctx`'s mode. */
  outputs(ctx: ForwardContext, images: Sym): readonly (readonly [string, Sym])[];
  /** A training-mode forward pass and the loss of the batch, the loss inputs by name. */
  loss(ctx: ForwardContext, images: Sym, inputs: ReadonlyMap<string, Value>): Sym;
}

/** A model ready to compile: its parameters and buffers, its output size, its forward pass. */
export interface ModelDefinition {
  readonly config: ModelConfig;
  readonly registry: Registry;
  /** The output grid (the detector's too: input / 4). */
  readonly heatmapWidth: number;
  readonly heatmapHeight: number;
  /** The heatmaps; the detector's center probabilities. */
  forward(ctx: ForwardContext, images: Sym): Sym;
  /** Set for models trained with a loss of their own and exported with several outputs (the detector). */
  readonly objective?: ModelObjective;
}

/** Problems with a model config (empty when it can be built). */
export function modelConfigProblems(config: ModelConfig): string[] {
  const problems: string[] = [];
  const positive = (value: number, what: string) => {
    if (!Number.isInteger(value) || value <= 0) problems.push(`${what} must be a positive integer, got ${value}`);
  };
  positive(config.inputWidth, "input width");
  positive(config.inputHeight, "input height");
  const detector = config.architecture === "detector-lite";
  if (!detector) positive(config.numKeypoints, "number of keypoints");
  // Every big model reaches 1/32 (HRNet's fourth branch, ResNet's last stage) and upsamples back to 1/4; lite
  // reaches 1/8, or 1/16 with a fourth width (the detector's default).
  const divisor =
    config.architecture === "lite" ? ((config.lite?.channels?.length ?? 3) === 4 ? 16 : 8) : detector ? ((config.detector?.channels?.length ?? 4) === 4 ? 16 : 8) : 32;
  if (config.inputWidth % divisor !== 0 || config.inputHeight % divisor !== 0) {
    problems.push(`${config.architecture} needs an input size divisible by ${divisor}, got ${config.inputWidth}x${config.inputHeight}`);
  }
  const stride = config.lite?.heatmapStride;
  if (stride !== undefined && (config.architecture !== "lite" || (stride !== 2 && stride !== 4))) {
    problems.push(`a heatmap stride of ${String(stride)} is not possible: the lite model outputs at 1/4 or 1/2 of the input, the others at 1/4`);
  }
  if (config.architecture === "simplebaseline") {
    const depth = config.simpleBaseline?.depth ?? 50;
    if (!RESNET_DEPTHS.includes(depth)) problems.push(`ResNet depth must be one of ${RESNET_DEPTHS.join(", ")}, got ${depth}`);
    const kernels = config.simpleBaseline?.deconvKernels ?? [4, 4, 4];
    for (const kernel of kernels) {
      try {
        deconvPadding(kernel);
      } catch (error) {
        problems.push((error as Error).message);
      }
    }
    const filters = config.simpleBaseline?.deconvFilters ?? [256, 256, 256];
    if (filters.length !== 3 || kernels.length !== 3) problems.push("SimpleBaseline needs three deconvolution layers (filters and kernels)");
  }
  if (config.architecture === "hrnet") {
    const stages = config.hrnet?.stages ?? hrnetStages(config.hrnet?.width ?? 32);
    stages.forEach((stage, i) => {
      if (stage.numBlocks.length !== stage.numBranches || stage.numChannels.length !== stage.numBranches) {
        problems.push(`HRNet stage ${i + 2}: NUM_BLOCKS and NUM_CHANNELS need one entry per branch (${stage.numBranches})`);
      }
      if (stage.numBranches !== i + 2) problems.push(`HRNet stage ${i + 2} must have ${i + 2} branches, got ${stage.numBranches}`);
    });
  }
  if (detector) problems.push(...detectorProblems(config.detector ?? {}));
  if (!["lite", "simplebaseline", "hrnet", "detector-lite"].includes(config.architecture)) problems.push(`unknown architecture ${String(config.architecture)}`);
  return problems;
}

/** Input pixels per heatmap pixel: 4 for every model but a lite one configured for 2. */
export function heatmapStride(config: ModelConfig): number {
  return config.architecture === "lite" ? (config.lite?.heatmapStride ?? 4) : 4;
}

/** Builds the definition of a zoo model; throws a RangeError naming every problem of an invalid config. */
export function defineModel(config: ModelConfig): ModelDefinition {
  const problems = modelConfigProblems(config);
  if (problems.length > 0) throw new RangeError(`invalid model config: ${problems.join("; ")}`);
  const registry = new Registry();
  let model: { forward(ctx: ForwardContext, images: Sym): Sym };
  let objective: ModelObjective | undefined;
  switch (config.architecture) {
    case "lite":
      model = new LitePose(
        registry,
        { channels: config.lite?.channels ?? [16, 32, 64], blocksPerStage: config.lite?.blocksPerStage ?? 1, heatmapStride: config.lite?.heatmapStride ?? 4 },
        config.numKeypoints,
      );
      break;
    case "simplebaseline":
      model = new SimpleBaseline(
        registry,
        {
          depth: config.simpleBaseline?.depth ?? 50,
          baseWidth: config.simpleBaseline?.baseWidth ?? 64,
          deconvFilters: config.simpleBaseline?.deconvFilters ?? [256, 256, 256],
          deconvKernels: config.simpleBaseline?.deconvKernels ?? [4, 4, 4],
          deconvWithBias: config.simpleBaseline?.deconvWithBias ?? false,
          finalConvKernel: config.simpleBaseline?.finalConvKernel ?? 1,
        },
        config.numKeypoints,
      );
      break;
    case "hrnet":
      model = new Hrnet(
        registry,
        {
          stages: config.hrnet?.stages ?? hrnetStages(config.hrnet?.width ?? 32),
          finalConvKernel: config.hrnet?.finalConvKernel ?? 1,
          stage1Planes: config.hrnet?.stage1Planes ?? 64,
          stemWidth: config.hrnet?.stemWidth ?? 64,
        },
        config.numKeypoints,
      );
      break;
    case "detector-lite": {
      const detector = new DetectorLite(registry, detectorConfig(config));
      const [h, w] = [config.inputHeight / DETECTOR_STRIDE, config.inputWidth / DETECTOR_STRIDE];
      objective = {
        lossInputs: [
          { name: DetectorIo.centerTarget, shape: [detectorConfig(config).numClasses, h, w] },
          { name: DetectorIo.sizeTarget, shape: [2, h, w] },
          { name: DetectorIo.offsetTarget, shape: [2, h, w] },
          { name: DetectorIo.regMask, shape: [1, h, w] },
        ],
        outputs: (ctx, images) => detector.outputs(ctx, images),
        loss: (ctx, images, inputs) => detector.loss(ctx, images, inputs),
      };
      model = { forward: (ctx, images) => detector.centers(ctx, images) };
      break;
    }
  }
  const stride = heatmapStride(config);
  return {
    config,
    registry,
    heatmapWidth: config.inputWidth / stride,
    heatmapHeight: config.inputHeight / stride,
    forward: (ctx, images) => model.forward(ctx, images),
    ...(objective === undefined ? {} : { objective }),
  };
}

/** The detector's config with its defaults filled in. */
export function detectorConfig(config: ModelConfig): DetectorLiteConfig {
  const given = config.detector ?? {};
  const channels = given.channels ?? [16, 32, 64, 128];
  return {
    channels,
    blocksPerStage: given.blocksPerStage ?? 1,
    numClasses: given.numClasses ?? 1,
    headChannels: given.headChannels ?? channels[1],
    sizeWeight: given.sizeWeight ?? 0.1,
    offsetWeight: given.offsetWeight ?? 1,
  };
}

function detectorProblems(config: Partial<DetectorLiteConfig>): string[] {
  const problems: string[] = [];
  const positive = (value: number | undefined, what: string) => {
    if (value !== undefined && (!Number.isInteger(value) || value <= 0)) problems.push(`${what} must be a positive integer, got ${value}`);
  };
  const channels = config.channels;
  if (channels !== undefined) {
    const count: number = channels.length;
    if (count !== 3 && count !== 4) problems.push(`the detector's backbone needs 3 or 4 widths, got ${count}`);
    channels.forEach((width, i) => positive(width, `detector width ${i + 1}`));
  }
  positive(config.blocksPerStage, "detector blocks per stage");
  positive(config.numClasses, "detector classes");
  positive(config.headChannels, "detector head width");
  for (const [value, what] of [[config.sizeWeight, "size"], [config.offsetWeight, "offset"]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) problems.push(`the detector's ${what} loss weight must be a finite number >= 0, got ${value}`);
  }
  return problems;
}
