import { AppError, Code } from "@poseloop/core";
import { COCO17 } from "@poseloop/pose";
import { Architecture, BlockType, type HrnetSpec, type HrnetStage, type ModelSpec } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { HrnetConfig, HrnetStageConfig, LiteConfig, ModelConfig, SimpleBaselineConfig } from "@poseloop/train";

/**
 * The model zoo's config for a `ModelSpec`, so that `modelConfigProblems` and `defineModel` of @poseloop/train
 * see exactly what the trainer will build. Zero values are left out and take the zoo's defaults. Throws
 * INVALID_ARGUMENT when the architecture is unspecified (resolveTrainConfig reports that as a problem first).
 */
export function modelConfigFromSpec(spec: ModelSpec): ModelConfig {
  const base = {
    inputWidth: spec.inputSize?.width ?? 0,
    inputHeight: spec.inputSize?.height ?? 0,
    numKeypoints: spec.keypointSchema?.keypointNames.length ?? COCO17.names.length,
  };
  switch (spec.architecture) {
    case Architecture.LITE: {
      const lite = spec.extra.case === "lite" ? spec.extra.value : undefined;
      const config: { -readonly [K in keyof LiteConfig]?: LiteConfig[K] } = {};
      const [c0, c1, c2, c3] = lite?.channels ?? [];
      // The lite net has three or four stages; another count is reported by resolveTrainConfig.
      if (c0 !== undefined && c1 !== undefined && c2 !== undefined) {
        if (lite?.channels.length === 3) config.channels = [c0, c1, c2];
        if (lite?.channels.length === 4 && c3 !== undefined) config.channels = [c0, c1, c2, c3];
      }
      if (lite !== undefined && lite.blocksPerStage > 0) config.blocksPerStage = lite.blocksPerStage;
      // MODEL.HEATMAP_SIZE at half the input asks for the lite net's half-resolution head.
      const heatmap = spec.codec?.kind.case === "heatmap" ? spec.codec.kind.value : undefined;
      if (heatmap !== undefined && heatmap.width > 0 && heatmap.width * 2 === base.inputWidth && heatmap.height * 2 === base.inputHeight) config.heatmapStride = 2;
      return { architecture: "lite", ...base, lite: config };
    }
    case Architecture.SIMPLE_BASELINE: {
      const sb = spec.extra.case === "simpleBaseline" ? spec.extra.value : undefined;
      const config: { -readonly [K in keyof SimpleBaselineConfig]?: SimpleBaselineConfig[K] } = {};
      if (sb !== undefined) {
        if (sb.resnetDepth > 0) config.depth = sb.resnetDepth;
        if (sb.deconvFilters.length > 0) config.deconvFilters = [...sb.deconvFilters];
        if (sb.deconvKernels.length > 0) config.deconvKernels = [...sb.deconvKernels];
        config.deconvWithBias = sb.deconvWithBias;
        if (sb.finalConvKernel > 0) config.finalConvKernel = sb.finalConvKernel;
      }
      return { architecture: "simplebaseline", ...base, simpleBaseline: config };
    }
    case Architecture.HRNET:
      return { architecture: "hrnet", ...base, hrnet: hrnetConfig(spec.extra.case === "hrnet" ? spec.extra.value : undefined) };
    case Architecture.DETECTOR_LITE: {
      const detector = spec.extra.case === "detectorLite" ? spec.extra.value : undefined;
      const config: { -readonly [K in keyof NonNullable<ModelConfig["detector"]>]?: NonNullable<ModelConfig["detector"]>[K] } = {};
      const [c0, c1, c2, c3] = detector?.channels ?? [];
      // Three or four widths; another count is reported by resolveTrainConfig.
      if (c0 !== undefined && c1 !== undefined && c2 !== undefined) {
        if (detector?.channels.length === 3) config.channels = [c0, c1, c2];
        if (detector?.channels.length === 4 && c3 !== undefined) config.channels = [c0, c1, c2, c3];
      }
      if (detector !== undefined) {
        if (detector.blocksPerStage > 0) config.blocksPerStage = detector.blocksPerStage;
        if (detector.numClasses > 0) config.numClasses = detector.numClasses;
        if (detector.headChannels > 0) config.headChannels = detector.headChannels;
        if (detector.sizeWeight !== undefined) config.sizeWeight = detector.sizeWeight;
        if (detector.offsetWeight !== undefined) config.offsetWeight = detector.offsetWeight;
      }
      return { architecture: "detector-lite", ...base, numKeypoints: 0, detector: config };
    }
    default:
      throw new AppError(Code.INVALID_ARGUMENT, `model architecture ${spec.architecture} is not one of the zoo's (lite, simple baseline, hrnet, detector lite)`);
  }
}

/**
 * The spec's stages are STAGE1..STAGE4 of the reference config; the zoo fixes STAGE1's shape (four bottlenecks)
 * and takes only its width, so a leading one-branch stage becomes `stage1Planes` and the rest `stages`.
 */
function hrnetConfig(spec: HrnetSpec | undefined): NonNullable<ModelConfig["hrnet"]> {
  const config: { -readonly [K in keyof HrnetConfig]?: HrnetConfig[K] } & { width?: number } = {};
  if (spec === undefined) return config;
  const stage1 = spec.stages[0]?.numBranches === 1 ? spec.stages[0] : undefined;
  const branched = stage1 === undefined ? spec.stages : spec.stages.slice(1);
  if (branched.length > 0) config.stages = branched.map(stageConfig);
  const planes = stage1?.numChannels[0];
  if (planes !== undefined && planes > 0) config.stage1Planes = planes;
  if (spec.width > 0) config.width = spec.width;
  if (spec.finalConvKernel > 0) config.finalConvKernel = spec.finalConvKernel;
  return config;
}

function stageConfig(stage: HrnetStage): HrnetStageConfig {
  return {
    numModules: stage.numModules,
    numBranches: stage.numBranches,
    block: stage.block === BlockType.BOTTLENECK ? "BOTTLENECK" : "BASIC",
    numBlocks: [...stage.numBlocks],
    numChannels: [...stage.numChannels],
  };
}
