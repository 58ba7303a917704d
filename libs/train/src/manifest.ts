import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { COCO17, type KeypointSchema } from "@poseloop/pose";
import {
  ChannelOrder,
  DetectorHead,
  HeatmapRefinement,
  type InputSpecSchema,
  KeypointSchemaSchema,
  ModelKind,
  type ModelManifestSchema,
  Precision,
  ResizeMode,
  type KeypointSchema as KeypointSchemaProto,
} from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DETECTOR_STRIDE, DetectorIo } from "./zoo/detector-lite.js";
import { detectorConfig, heatmapStride, type ModelConfig } from "./zoo/model-config.js";

/** ImageNet statistics on the 0–255 scale, what the zoo models are trained with. */
export const IMAGENET_MEAN = [123.675, 116.28, 103.53] as const;
export const IMAGENET_STD = [58.395, 57.12, 57.375] as const;

export interface ManifestOptions {
  readonly schema?: KeypointSchema;
  /** Gaussian sigma in heatmap pixels; default 2 (the references' value at 64x48 heatmaps). */
  readonly sigma?: number;
  readonly refinement?: "none" | "quarter-offset" | "dark";
  readonly unbiased?: boolean;
  readonly precision?: Precision;
  readonly inputName?: string;
  readonly outputName?: string;
}

/** The name of a zoo model in manifests: "lite", "simplebaseline-r50", "hrnet-w32", "detector-lite". */
export function architectureName(config: ModelConfig): string {
  if (config.architecture === "detector-lite") return "detector-lite";
  if (config.architecture === "simplebaseline") return `simplebaseline-r${config.simpleBaseline?.depth ?? 50}`;
  if (config.architecture === "hrnet") return `hrnet-w${config.hrnet?.width ?? config.hrnet?.stages?.[0]?.numChannels[0] ?? 32}`;
  return "lite";
}

export function keypointSchemaProto(schema: KeypointSchema): KeypointSchemaProto {
  return create(KeypointSchemaSchema, {
    name: schema.name,
    keypointNames: [...schema.names],
    skeleton: schema.skeleton.map(([fromIndex, toIndex]) => ({ fromIndex, toIndex })),
    flipPairs: schema.flipPairs.map(([leftIndex, rightIndex]) => ({ leftIndex, rightIndex })),
    oksSigmas: [...schema.sigmas],
  });
}

/**
 * The serving part of a zoo model's manifest: input tensor and normalization, keypoint schema, heatmap codec,
 * output names. The trainer adds version, metrics, artifacts and provenance when it publishes.
 */
export function modelManifest(config: ModelConfig, options: ManifestOptions = {}): MessageInitShape<typeof ModelManifestSchema> {
  if (config.architecture === "detector-lite") return detectorManifest(config, options);
  const refinement = options.refinement === "dark" ? HeatmapRefinement.DARK : options.refinement === "none" ? HeatmapRefinement.NONE : HeatmapRefinement.QUARTER_OFFSET;
  const stride = heatmapStride(config);
  return {
    architecture: architectureName(config),
    input: inputSpec(config, options),
    keypointSchema: keypointSchemaProto(options.schema ?? COCO17),
    codec: { kind: { case: "heatmap", value: { width: config.inputWidth / stride, height: config.inputHeight / stride, sigma: options.sigma ?? 2, refinement, unbiased: options.unbiased ?? false } } },
    outputNames: [options.outputName ?? "heatmaps"],
    precision: options.precision ?? Precision.FP32,
  };
}

/** The zoo's input: RGB, ImageNet-normalized, at the config's size. */
function inputSpec(config: ModelConfig, options: ManifestOptions): MessageInitShape<typeof InputSpecSchema> {
  return { name: options.inputName ?? "input", width: config.inputWidth, height: config.inputHeight, channelOrder: ChannelOrder.RGB, mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD] };
}

/**
 * The serving part of the zoo detector's manifest (kind DETECTOR, PoseLoop's CenterNet head at stride 4, whole
 * frames letterboxed with zeros, person = class 0), with CenterNet's usual decoding defaults a stream may
 * override: score 0.3, NMS IoU 0.5, 100 boxes. No codec or keypoint schema: a detector has neither.
 */
function detectorManifest(config: ModelConfig, options: ManifestOptions): MessageInitShape<typeof ModelManifestSchema> {
  return {
    architecture: architectureName(config),
    kind: ModelKind.DETECTOR,
    input: inputSpec(config, options),
    detector: {
      head: DetectorHead.CENTERNET,
      numClasses: detectorConfig(config).numClasses,
      personClass: 0,
      strides: [DETECTOR_STRIDE],
      resize: ResizeMode.LETTERBOX,
      padValue: 0,
      scoreThreshold: 0.3,
      iouThreshold: 0.5,
      maxDetections: 100,
      outputNames: [DetectorIo.centers, DetectorIo.sizes, DetectorIo.offsets],
    },
    outputNames: [DetectorIo.centers, DetectorIo.sizes, DetectorIo.offsets],
    precision: options.precision ?? Precision.FP32,
  };
}
