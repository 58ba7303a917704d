import { create } from "@bufbuild/protobuf";
import { ChannelOrder, ModelManifestSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { COCO17 } from "@poseloop/pose";
import { describe, expect, it } from "vitest";
import { servingSpecFromManifest } from "./serving-spec.js";

function manifest(channelOrder: ChannelOrder, mean: number[], std: number[]) {
  return create(ModelManifestSchema, {
    model: { name: "m", version: "v1" },
    input: { name: "input", width: 48, height: 64, channelOrder, mean, std },
    keypointSchema: { name: "coco", keypointNames: [...COCO17.names] },
    codec: { kind: { case: "heatmap", value: { width: 12, height: 16, sigma: 2 } } },
    outputNames: ["heatmaps"],
  });
}

describe("servingSpecFromManifest", () => {
  it("reads a BGR model's mean and std, listed in the model's channel order, into RGB order for the crop", () => {
    // An OpenCV-trained model's manifest: blue first.
    const { spec, problems } = servingSpecFromManifest(manifest(ChannelOrder.BGR, [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]));
    expect(problems).toEqual([]);
    expect(spec?.channelOrder).toBe("BGR");
    expect(spec?.mean).toEqual([123.675, 116.28, 103.53]);
    expect(spec?.std).toEqual([58.395, 57.12, 57.375]);
  });

  it("keeps an RGB model's normalization as listed", () => {
    const { spec } = servingSpecFromManifest(manifest(ChannelOrder.RGB, [1, 2, 3], [4, 5, 6]));
    expect(spec?.mean).toEqual([1, 2, 3]);
    expect(spec?.std).toEqual([4, 5, 6]);
  });
});
