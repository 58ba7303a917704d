import { ModelKind } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { describe, expect, it } from "vitest";
import { DEFAULT_DECLARED_SIGMA, manifestYaml, parseManifestYaml } from "./manifest-yaml.js";

const DECLARED = `
input: { name: input, width: 192, height: 256, channel_order: bgr, mean: [0, 0, 0], std: [255, 255, 255] }
keypoints:
  name: hand-3
  names: [wrist, thumb, index]
  skeleton: [[0, 1], [0, 2]]
codec: { type: simcc, split_ratio: 2, sigma_x: 4.9, sigma_y: 5.66 }
outputs: [simcc_x, simcc_y]
`;

describe("the manifest YAML", () => {
  it("reads a declared schema (default sigmas) and writes it back as it read it", () => {
    const { manifest, problems } = parseManifestYaml(DECLARED);
    expect(problems).toEqual([]);
    expect(manifest?.keypointSchema?.keypointNames).toEqual(["wrist", "thumb", "index"]);
    expect(manifest?.keypointSchema?.oksSigmas).toEqual([DEFAULT_DECLARED_SIGMA, DEFAULT_DECLARED_SIGMA, DEFAULT_DECLARED_SIGMA]);
    expect(manifest?.codec?.kind.case).toBe("simcc");
    const again = parseManifestYaml(manifestYaml(manifest!, "exported"));
    expect(again.problems).toEqual([]);
    expect(again.manifest).toEqual(manifest);
  });

  it("writes a known schema by its name", () => {
    const text = "input: { width: 192, height: 256, mean: [0, 0, 0], std: [1, 1, 1] }\nkeypoints: coco-wholebody-133\ncodec: { type: heatmap, width: 48, height: 64 }\noutputs: [heatmaps]\n";
    const { manifest, problems } = parseManifestYaml(text);
    expect(problems).toEqual([]);
    expect(manifest?.keypointSchema?.keypointNames).toHaveLength(133);
    expect(manifestYaml(manifest!, "x")).toContain("keypoints: coco-wholebody-133");
  });

  it("names every problem at once", () => {
    const { manifest, problems } = parseManifestYaml("input: { width: -1, height: 64, mean: [1, 2] }\nkeypoints: coco17\ncodec: { type: heatmap, width: 48, split_ratio: 2 }\noutputs: [a, b]\nextra: 1\n");
    expect(manifest).toBeUndefined();
    expect(problems).toEqual(
      expect.arrayContaining([
        "extra: unknown key (known: kind, architecture, input, keypoints, codec, outputs, detector)",
        expect.stringMatching(/^input\.width: must be a positive integer/),
        expect.stringMatching(/^input\.mean: must be a list of 3 numbers/),
        expect.stringMatching(/^keypoints: "coco17" is not a schema PoseLoop knows/),
        "codec.height: required",
        "codec.split_ratio: a SimCC parameter, not a heatmap one",
        "outputs: a heatmap model has 1 output, the manifest names 2",
      ]),
    );
  });

  it("reads a detector's spec", () => {
    const { manifest, problems } = parseManifestYaml("kind: detector\ninput: { name: images, width: 640, height: 640, mean: [0, 0, 0], std: [1, 1, 1] }\ndetector: { head: yolox, num_classes: 80, person_class: 0, strides: [8, 16, 32], pad_value: 114 }\n");
    expect(problems).toEqual([]);
    expect(manifest?.kind).toBe(ModelKind.DETECTOR);
    expect(manifest?.detector?.strides).toEqual([8, 16, 32]);
    expect(parseManifestYaml(manifestYaml(manifest!, "d")).manifest).toEqual(manifest);
  });
});
