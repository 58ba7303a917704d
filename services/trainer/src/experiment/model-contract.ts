import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { servingSpecFromManifest, type ServingSpec } from "@poseloop/estimator";
import type { KeypointSchema } from "@poseloop/pose";
import {
  ChannelOrder,
  DetectorSpecSchema,
  InputSpecSchema,
  ModelManifestSchema,
  ModelRefSchema,
  Precision,
  type DetectorSpec,
  type KeypointSchema as KeypointSchemaProto,
} from "@poseloop/proto/poseloop/common/v1/model_pb";
import { Architecture, type ModelSpec, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { architectureName, modelManifest, type ModelConfig } from "@poseloop/train";
import { AppError, Code } from "@poseloop/core";
import { modelConfigFromSpec } from "./model-config.js";

export const INPUT_NAME = "input";
export const OUTPUT_NAME = "heatmaps";

/** The keypoint schema of a manifest or config, as @poseloop/pose uses it. */
export function schemaFromProto(schema: KeypointSchemaProto | undefined): KeypointSchema {
  return {
    name: schema?.name ?? "",
    names: [...(schema?.keypointNames ?? [])],
    skeleton: (schema?.skeleton ?? []).map((edge) => [edge.fromIndex, edge.toIndex] as const),
    flipPairs: (schema?.flipPairs ?? []).map((pair) => [pair.leftIndex, pair.rightIndex] as const),
    sigmas: [...(schema?.oksSigmas ?? [])],
  };
}

/**
 * The serving half of a run's manifests (architecture, input tensor and normalization, keypoint schema,
 * codec, output names): what every inferencer checks a version against before loading it.
 */
function modelSpec(config: TrainConfig): ModelSpec {
  if (config.model === undefined) throw new AppError(Code.INVALID_ARGUMENT, "the config has no MODEL section");
  return config.model;
}

/** MODEL.NAME detector_lite: the run trains a person detector (ModelKind DETECTOR), not a keypoint model. */
export function isDetector(config: TrainConfig): boolean {
  return config.model?.architecture === Architecture.DETECTOR_LITE;
}

export function servingManifest(config: TrainConfig, precision: Precision): MessageInitShape<typeof ModelManifestSchema> {
  const model = modelSpec(config);
  const [m0 = 0, m1 = 0, m2 = 0] = model.mean;
  const [s0 = 1, s1 = 1, s2 = 1] = model.std;
  const input = { name: INPUT_NAME, width: model.inputSize?.width ?? 0, height: model.inputSize?.height ?? 0, channelOrder: ChannelOrder.RGB, mean: [m0, m1, m2], std: [s0, s1, s2] };
  if (model.architecture === Architecture.DETECTOR_LITE) {
    // The zoo's detector manifest (kind DETECTOR, its DetectorSpec), under this config's input and normalization.
    const manifest = create(ModelManifestSchema, modelManifest(modelConfigFromSpec(model), { precision, inputName: INPUT_NAME }));
    manifest.input = create(InputSpecSchema, input);
    return manifest;
  }
  return {
    architecture: architectureName(modelConfigFromSpec(model)),
    input,
    ...(model.keypointSchema === undefined ? {} : { keypointSchema: model.keypointSchema }),
    ...(model.codec === undefined ? {} : { codec: model.codec }),
    outputNames: [OUTPUT_NAME],
    precision,
  };
}

/**
 * Everything a run (training, or a checkpoint's export) derives from a resolved config: the zoo model, the
 * serving spec, the schema.
 */
export interface PoseRunContract {
  readonly kind: "pose";
  readonly modelConfig: ModelConfig;
  readonly spec: ServingSpec;
  readonly schema: KeypointSchema;
}

/** A detector's: the zoo model, its input and normalization, the DetectorSpec it is published with. */
export interface DetectorRunContract {
  readonly kind: "detector";
  readonly modelConfig: ModelConfig;
  readonly detector: DetectorSpec;
  readonly inputWidth: number;
  readonly inputHeight: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

export type RunContract = PoseRunContract | DetectorRunContract;

export function runContract(config: TrainConfig, version = "candidate"): RunContract {
  const manifest = create(ModelManifestSchema, servingManifest(config, Precision.FP32));
  manifest.model = create(ModelRefSchema, { name: "candidate", version });
  const model = modelSpec(config);
  if (isDetector(config)) {
    const input = manifest.input;
    const [m0 = 0, m1 = 0, m2 = 0] = input?.mean ?? [];
    const [s0 = 1, s1 = 1, s2 = 1] = input?.std ?? [];
    return {
      kind: "detector",
      modelConfig: modelConfigFromSpec(model),
      detector: manifest.detector ?? create(DetectorSpecSchema),
      inputWidth: input?.width ?? 0,
      inputHeight: input?.height ?? 0,
      mean: [m0, m1, m2],
      std: [s0, s1, s2],
    };
  }
  const { spec, problems } = servingSpecFromManifest(manifest);
  if (spec === undefined) throw AppError.invalid("the model section of the config", problems);
  return { kind: "pose", modelConfig: modelConfigFromSpec(model), spec, schema: schemaFromProto(model.keypointSchema) };
}
