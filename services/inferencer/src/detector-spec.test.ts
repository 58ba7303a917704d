import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { ChannelOrder, DetectorHead, ModelKind, ModelManifestSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { describe, expect, it } from "vitest";
import { detectorSpecFromManifest, detectorSpecOf } from "./detector-spec.js";

const rtmdet = () =>
  create(ModelManifestSchema, {
    model: { name: "people", version: "v3" },
    kind: ModelKind.DETECTOR,
    input: { name: "input", width: 640, height: 640, channelOrder: ChannelOrder.BGR, mean: [103.53, 116.28, 123.675], std: [57.375, 57.12, 58.395] },
    detector: { head: DetectorHead.RTMDET, numClasses: 80, personClass: 0, padValue: 114 },
  });

describe("detectorSpecFromManifest", () => {
  it("reads a BGR model's normalization into RGB order", () => {
    const { spec, problems } = detectorSpecFromManifest(rtmdet());
    expect(problems).toEqual([]);
    expect(spec).toMatchObject({ kind: "detector", version: "v3", inputName: "input", inputWidth: 640, channelOrder: "BGR", mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] });
    expect(spec?.detector.head).toBe(DetectorHead.RTMDET);
  });

  it("lists every reason a manifest cannot serve as a detector", () => {
    const manifest = rtmdet();
    manifest.kind = ModelKind.POSE;
    manifest.detector!.personClass = 80;
    manifest.input!.std = [1, 0, 1];
    let error: unknown;
    try {
      detectorSpecOf(manifest, undefined, "people");
    } catch (caught) {
      error = caught;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toEqual([
      "the manifest's kind is POSE, not DETECTOR: a detector name serves only detectors",
      "detector.person_class 80 must be below num_classes 80",
      "input std values must be positive",
    ]);
  });
});
