import { AppError } from "@poseloop/core";
import { checkDetectorSpec } from "@poseloop/detect";
import { ChannelOrder, ModelKind, type DetectorSpec, type ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";

/** What an inference worker needs to run a person detector version: plain data, it crosses into worker threads. */
export interface DetectorServingSpec {
  readonly kind: "detector";
  readonly version: string;
  readonly inputName: string;
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** Normalization per RGB channel (TensorNormalization's order), whatever the model's channel order. */
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  readonly channelOrder: "RGB" | "BGR";
  /** The manifest's DetectorSpec (a protobuf-es message is plain data: it survives the structured clone). */
  readonly detector: DetectorSpec;
}

/**
 * The serving spec of a detector manifest, or every reason it cannot be served: it must be a DETECTOR with a
 * usable DetectorSpec and an input spec. Whether the model's outputs match the head's layout is checked when
 * the model loads (the manifest alone cannot tell).
 */
export function detectorSpecFromManifest(manifest: ModelManifest): { spec?: DetectorServingSpec; problems: string[] } {
  const problems: string[] = [];
  const version = manifest.model?.version ?? "";
  if (version === "") problems.push("the manifest names no version");
  if (manifest.kind !== ModelKind.DETECTOR) problems.push(`the manifest's kind is ${ModelKind[manifest.kind]}, not DETECTOR: a detector name serves only detectors`);
  const detector = manifest.detector;
  if (detector === undefined) problems.push("the manifest has no detector spec");
  else problems.push(...checkDetectorSpec(detector));
  const input = manifest.input;
  if (input === undefined) problems.push("the manifest has no input spec");
  if (input !== undefined && (input.width === 0 || input.height === 0)) problems.push(`input size ${input.width}x${input.height} is empty`);
  if (input !== undefined && input.name === "") problems.push("the manifest does not name the input tensor");
  const mean = input?.mean ?? [];
  const std = input?.std ?? [];
  if (mean.length !== 3 || std.length !== 3) problems.push(`input normalization needs 3 means and 3 stds, got ${mean.length} and ${std.length}`);
  if (std.some((s) => !(s > 0))) problems.push("input std values must be positive");
  if (problems.length > 0 || input === undefined || detector === undefined) return { problems };
  // The manifest lists mean and std in the model's channel order (a BGR model's first value is blue's).
  const bgr = input.channelOrder === ChannelOrder.BGR;
  const rgb = (values: readonly number[]): [number, number, number] => (bgr ? [values[2] as number, values[1] as number, values[0] as number] : [values[0] as number, values[1] as number, values[2] as number]);
  return {
    problems,
    spec: {
      kind: "detector",
      version,
      inputName: input.name,
      inputWidth: input.width,
      inputHeight: input.height,
      mean: rgb(mean),
      std: rgb(std),
      channelOrder: bgr ? "BGR" : "RGB",
      detector,
    },
  };
}


/** The detector ModelManager's manifest check (`specOf`): INVALID_ARGUMENT listing every problem. */
export function detectorSpecOf(manifest: ModelManifest, _current: DetectorServingSpec | undefined, modelName: string): DetectorServingSpec {
  const { spec, problems } = detectorSpecFromManifest(manifest);
  if (spec === undefined) throw AppError.invalid(`detector manifest of ${modelName} ${manifest.model?.version ?? ""}`, problems);
  return spec;
}
