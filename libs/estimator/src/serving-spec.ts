import { COCO17, keypointSchemaByName, type KeypointCodecSpec } from "@poseloop/pose";
import type { KeypointSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { ChannelOrder, type ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { HeatmapRefinement } from "@poseloop/proto/poseloop/common/v1/model_pb";

/** What an inference worker needs to run a model version: plain data, it crosses into worker threads. */
export interface ServingSpec {
  readonly version: string;
  readonly inputName: string;
  readonly outputNames: readonly string[];
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** Per-channel normalization in RGB order, whatever channelOrder the model's input planes are in. */
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  readonly channelOrder: "RGB" | "BGR";
  readonly codec: KeypointCodecSpec;
  readonly numKeypoints: number;
  /** [left, right] keypoint pairs, for the flip test. */
  readonly flipPairs: readonly (readonly [number, number])[];
  /** OKS sigmas of the keypoints (tracking by OKS, trial agreement); absent when none fits (oksSigmasOf). */
  readonly oksSigmas?: readonly number[];
}

/**
 * The serving spec of a manifest, or every reason the manifest cannot be served (the contract check that runs
 * before any byte of a new version is loaded).
 */
export function servingSpecFromManifest(manifest: ModelManifest): { spec?: ServingSpec; problems: string[] } {
  const problems: string[] = [];
  const input = manifest.input;
  const schema = manifest.keypointSchema;
  const version = manifest.model?.version ?? "";
  if (version === "") problems.push("the manifest names no version");
  if (input === undefined) problems.push("the manifest has no input spec");
  if (input !== undefined && (input.width === 0 || input.height === 0)) problems.push(`input size ${input.width}x${input.height} is empty`);
  if (input !== undefined && input.name === "") problems.push("the manifest does not name the input tensor");
  const k = schema?.keypointNames.length ?? 0;
  if (k === 0) problems.push("the manifest's keypoint schema has no keypoints");
  const mean = input?.mean ?? [];
  const std = input?.std ?? [];
  if (mean.length !== 3 || std.length !== 3) problems.push(`input normalization needs 3 means and 3 stds, got ${mean.length} and ${std.length}`);
  if (std.some((s) => !(s > 0))) problems.push("input std values must be positive");
  if (manifest.outputNames.length === 0) problems.push("the manifest names no output tensors");
  let codec: KeypointCodecSpec | undefined;
  const c = manifest.codec?.kind;
  if (c?.case === "heatmap") {
    const h = c.value;
    if (h.width === 0 || h.height === 0) problems.push("heatmap codec has no size");
    if (!(h.sigma > 0)) problems.push("heatmap codec sigma must be positive");
    if (manifest.outputNames.length !== 1) problems.push(`a heatmap model has one output, the manifest names ${manifest.outputNames.length}`);
    codec = {
      kind: "heatmap",
      inputSize: { width: input?.width ?? 0, height: input?.height ?? 0 },
      heatmapSize: { width: h.width, height: h.height },
      numKeypoints: k,
      sigma: h.sigma,
      refinement: h.refinement === HeatmapRefinement.DARK ? "dark" : h.refinement === HeatmapRefinement.NONE ? "none" : "quarter-offset",
      unbiased: h.unbiased,
    };
  } else if (c?.case === "simcc") {
    if (manifest.outputNames.length !== 2) problems.push(`a SimCC model has two outputs, the manifest names ${manifest.outputNames.length}`);
    codec = { kind: "simcc", inputSize: { width: input?.width ?? 0, height: input?.height ?? 0 }, numKeypoints: k, splitRatio: c.value.splitRatio || 2 };
  } else {
    problems.push("the manifest names no codec");
  }
  if (problems.length > 0 || input === undefined || codec === undefined || schema === undefined) return { problems };
  const sigmas = oksSigmasOf(schema, k);
  return {
    problems,
    spec: {
      version,
      inputName: input.name,
      outputNames: [...manifest.outputNames],
      inputWidth: input.width,
      inputHeight: input.height,
      // The manifest lists mean and std in the model's channel order (a BGR model's first value is blue's);
      // the crop's normalization takes them in RGB order whatever order the planes are written in.
      ...rgbNormalization(mean, std, input.channelOrder === ChannelOrder.BGR),
      channelOrder: input.channelOrder === ChannelOrder.BGR ? "BGR" : "RGB",
      codec,
      numKeypoints: k,
      flipPairs: schema.flipPairs.map((pair) => [pair.leftIndex, pair.rightIndex] as const),
      ...(sigmas === undefined ? {} : { oksSigmas: sigmas }),
    },
  };
}

/**
 * The OKS sigmas of a model with `keypoints` keypoints: its schema's oks_sigmas when it names one positive sigma
 * per keypoint, else those of the known schema it names (blazepose-33, ...), else COCO's for 17 keypoints.
 * Undefined when none fits: OKS with another schema's sigmas would weigh each keypoint by another keypoint's
 * tolerance, or not line up with the keypoints at all.
 */
function oksSigmasOf(schema: KeypointSchema | undefined, keypoints: number): readonly number[] | undefined {
  const named = schema?.oksSigmas ?? [];
  if (named.length === keypoints && named.every((sigma) => sigma > 0)) return [...named];
  const known = keypointSchemaByName(schema?.name ?? "");
  if (known !== undefined && known.sigmas.length === keypoints) return known.sigmas;
  return keypoints === COCO17.sigmas.length ? COCO17.sigmas : undefined;
}

function rgbNormalization(
  mean: readonly number[],
  std: readonly number[],
  bgr: boolean,
): { mean: readonly [number, number, number]; std: readonly [number, number, number] } {
  const [a, b, c] = [0, 1, 2].map((i) => [mean[i] as number, std[i] as number] as const) as [readonly [number, number], readonly [number, number], readonly [number, number]];
  const [r, g, bl] = bgr ? [c, b, a] : [a, b, c];
  return { mean: [r[0], g[0], bl[0]], std: [r[1], g[1], bl[1]] };
}
