import type { ForwardContext } from "../nn/context.js";
import { Registry } from "../nn/parameters.js";
import type { Sym } from "../tape.js";
import { Hrnet, hrnetStages, type HrnetConfig } from "./hrnet.js";
import { LitePose, type LiteConfig } from "./lite.js";
import { deconvPadding, RESNET_DEPTHS, SimpleBaseline, type SimpleBaselineConfig } from "./simple-baseline.js";

export type Architecture = "lite" | "simplebaseline" | "hrnet";

/** A heatmap model of the zoo, as plain data (it crosses into the StepRunner's worker). */
export interface ModelConfig {
  readonly architecture: Architecture;
  /** Input crop in pixels (MODEL.IMAGE_SIZE), e.g. 192 x 256. */
  readonly inputWidth: number;
  readonly inputHeight: number;
  readonly numKeypoints: number;
  readonly lite?: Partial<LiteConfig>;
  readonly simpleBaseline?: Partial<SimpleBaselineConfig>;
  /** `width` picks the reference layout HRNet-W<width>; `stages` overrides it. */
  readonly hrnet?: Partial<HrnetConfig> & { readonly width?: number };
}

/** A model ready to compile: its parameters and buffers, its output size, its forward pass. */
export interface ModelDefinition {
  readonly config: ModelConfig;
  readonly registry: Registry;
  readonly heatmapWidth: number;
  readonly heatmapHeight: number;
  forward(ctx: ForwardContext, images: Sym): Sym;
}

/** Problems with a model config (empty when it can be built). */
export function modelConfigProblems(config: ModelConfig): string[] {
  const problems: string[] = [];
  const positive = (value: number, what: string) => {
    if (!Number.isInteger(value) || value <= 0) problems.push(`${what} must be a positive integer, got ${value}`);
  };
  positive(config.inputWidth, "input width");
  positive(config.inputHeight, "input height");
  positive(config.numKeypoints, "number of keypoints");
  // Every big model reaches 1/32 (HRNet's fourth branch, ResNet's last stage) and upsamples back to 1/4; lite
  // reaches 1/8, or 1/16 with a fourth width.
  const divisor = config.architecture === "lite" ? ((config.lite?.channels?.length ?? 3) === 4 ? 16 : 8) : 32;
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
  if (!["lite", "simplebaseline", "hrnet"].includes(config.architecture)) problems.push(`unknown architecture ${String(config.architecture)}`);
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
  }
  const stride = heatmapStride(config);
  return {
    config,
    registry,
    heatmapWidth: config.inputWidth / stride,
    heatmapHeight: config.inputHeight / stride,
    forward: (ctx, images) => model.forward(ctx, images),
  };
}
