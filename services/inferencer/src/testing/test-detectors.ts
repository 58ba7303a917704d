import { create } from "@bufbuild/protobuf";
import type { ModelRegistry, PublishResult } from "@poseloop/bus";
import { plantedDetector, type PlantedBox } from "@poseloop/detect/testing";
import { ChannelOrder, DetectorSpecSchema, ModelKind, ModelManifestSchema, Precision, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";

export interface TestDetectorOptions {
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** The people it finds in every frame, in INPUT pixels. */
  readonly boxes: readonly PlantedBox[];
  /** Its manifest's DetectorSpec. */
  readonly spec: MessageInitShape<typeof DetectorSpecSchema>;
  /**
   * The head layout its outputs really have, when it differs from the manifest's (a broken publication: the
   * manifest says one layout, the model outputs another).
   */
  readonly actual?: MessageInitShape<typeof DetectorSpecSchema>;
  readonly version?: string;
}

/**
 * Publishes a person detector that finds `boxes` in every frame (an ONNX model with the head's exact output
 * layout, run by the real onnxruntime) under `modelName`, as its serving version. Its input takes the raw 0-255
 * pixels (mean 0, std 1), as YOLOX exports do.
 */
export async function publishTestDetector(registry: ModelRegistry, modelName: string, options: TestDetectorOptions): Promise<PublishResult> {
  const spec: DetectorSpec = create(DetectorSpecSchema, options.spec);
  const actual = options.actual === undefined ? spec : create(DetectorSpecSchema, options.actual);
  const model = plantedDetector(actual, options.boxes, options.inputWidth, options.inputHeight);
  const manifest = create(ModelManifestSchema, {
    model: { name: modelName, version: options.version ?? "" },
    kind: ModelKind.DETECTOR,
    detector: spec,
    input: { name: "input", width: options.inputWidth, height: options.inputHeight, channelOrder: ChannelOrder.RGB, mean: [0, 0, 0], std: [1, 1, 1] },
    precision: Precision.FP32,
    trainingJobId: "job-detector-test",
  });
  return registry.publish({ manifest, files: [{ file: "model.onnx", data: model, precision: Precision.FP32 }], servingFile: "model.onnx", promote: true, setBy: "test", reason: "test detector" });
}
