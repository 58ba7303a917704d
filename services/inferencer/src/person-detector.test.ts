import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { plantedDetector } from "@poseloop/detect/testing";
import { encodeModel, GraphBuilder, hostTensor, int, ints } from "@poseloop/onnx";
import { DetectorHead, DetectorSpecSchema, ResizeMode, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { afterEach, describe, expect, it } from "vitest";
import type { DetectorServingSpec } from "./detector-spec.js";
import { PersonDetector } from "./person-detector.js";

const W = 8;
const H = 8;

function servingSpec(detector: DetectorSpec, version = "d1"): DetectorServingSpec {
  return { kind: "detector", version, inputName: "input", inputWidth: W, inputHeight: H, mean: [0, 0, 0], std: [1, 1, 1], channelOrder: "RGB", detector };
}

/**
 * A one-class boxes+scores detector that scores what it sees: box 0 (input rows 0-4) scores the top half's mean
 * pixel / 255, box 1 (rows 2-6) the bottom half's, so the scores show which pixels the letterbox put where.
 */
function halvesDetector(): Uint8Array {
  const g = new GraphBuilder({ name: "halves" });
  const input = g.input("input", "float32", ["batch", 3, H, W]);
  const half = (from: number, to: number) => {
    const slice = g.op("Slice", [input, g.int64s([from]), g.int64s([to]), g.int64s([2])]);
    return g.op("ReduceMean", [slice], { axes: ints([1, 2, 3]), keepdims: int(0) }, { shape: ["batch"] });
  };
  const top = g.op("Unsqueeze", [half(0, H / 2), g.int64s([1])]);
  const bottom = g.op("Unsqueeze", [half(H / 2, H), g.int64s([1])]);
  const scores = g.op("Mul", [g.op("Concat", [top, bottom], { axis: int(1) }), g.scalar(1 / 255)], {}, { shape: ["batch", 2] });
  g.output(scores, "scores");
  const boxes = hostTensor("float32", [1, 2, 4], [0, 0, W, 4, 0, 2, W, 6]);
  const shape = g.op("Concat", [g.op("Slice", [g.op("Shape", [input]), g.int64s([0]), g.int64s([1])]), g.int64s([2, 4])], { axis: int(0) });
  g.output(g.op("Expand", [g.constant(boxes, "boxes_value"), shape], {}, { shape: ["batch", 2, 4] }), "boxes");
  return encodeModel(g.build());
}

const halvesSpec = create(DetectorSpecSchema, { head: DetectorHead.BOXES_SCORES, numClasses: 1, padValue: 114, iouThreshold: 0.99, scoreThreshold: 0.01 });

/** A uniform grey frame as raw RGB8. */
function greyFrame(width: number, height: number, value: number) {
  return { kind: "raw" as const, width, height, format: "RGB8" as const, stride: 3 * width, data: new Uint8Array(width * height * 3).fill(value) };
}

describe("PersonDetector", () => {
  let detector: PersonDetector;
  afterEach(async () => detector?.close());

  it("letterboxes a frame top-left aligned, pads with pad_value, and maps boxes back to frame pixels", async () => {
    detector = new PersonDetector({ intraOpThreads: 1, maxPixels: 1 << 20 });
    await detector.load(servingSpec(halvesSpec), halvesDetector(), 2);
    // 16x8 at scale 0.5 fills the top half of the 8x8 input; the bottom half is padding.
    const [wide, tall] = await detector.detect("d1", [{ image: greyFrame(16, 8, 200) }, { image: greyFrame(8, 8, 200), histogram: true }]);
    expect(wide?.ok).toBe(true);
    if (wide?.ok !== true || tall?.ok !== true) return;
    // Box 0 covers the frame; box 1 reaches into the padding and is clipped at the frame's bottom edge.
    expect(wide.boxes.map((b) => [b.score, b.x, b.y, b.width, b.height])).toEqual([
      [expect.closeTo(200 / 255, 4), 0, 0, 16, 8],
      [expect.closeTo(114 / 255, 4), 0, 4, 16, 4],
    ]);
    // A square frame fills the whole input: both halves are frame pixels.
    expect(tall.boxes.map((b) => b.score)).toEqual([expect.closeTo(200 / 255, 4), expect.closeTo(200 / 255, 4)]);
    expect(tall.histogram).toBeInstanceOf(Float32Array);
    expect(tall.image).toMatchObject({ kind: "raw", width: 8, height: 8, format: "RGB8" });
  });

  it("stretches instead with resize STRETCH", async () => {
    detector = new PersonDetector({ intraOpThreads: 1, maxPixels: 1 << 20 });
    await detector.load(servingSpec(create(DetectorSpecSchema, { ...halvesSpec, resize: ResizeMode.STRETCH })), halvesDetector(), 1);
    const [wide] = await detector.detect("d1", [{ image: greyFrame(16, 8, 200) }]);
    expect(wide?.ok === true ? wide.boxes.map((b) => [b.score, b.x, b.y, b.width, b.height]) : []).toEqual([
      [expect.closeTo(200 / 255, 4), 0, 0, 16, 4],
      [expect.closeTo(200 / 255, 4), 0, 2, 16, 4],
    ]);
  });

  it("fails one undecodable frame alone", async () => {
    detector = new PersonDetector({ intraOpThreads: 1, maxPixels: 1 << 20 });
    await detector.load(servingSpec(halvesSpec), halvesDetector(), 1);
    const [bad, good] = await detector.detect("d1", [{ image: { kind: "encoded", data: Uint8Array.from([0xff, 0xd8, 0xff, 0x00]) } }, { image: greyFrame(8, 8, 50) }]);
    expect(bad).toMatchObject({ ok: false, code: Code.INVALID_ARGUMENT });
    expect(good?.ok).toBe(true);
  });

  it("refuses at load a model whose outputs are not its manifest's head layout, listing every mismatch", async () => {
    detector = new PersonDetector({ intraOpThreads: 1, maxPixels: 1 << 20 });
    // Exported with 1 class, described as a COCO YOLOX (80 classes) at strides 8, 16, 32.
    const yolox = create(DetectorSpecSchema, { head: DetectorHead.YOLOX, numClasses: 1, strides: [8, 16, 32] });
    const model = plantedDetector(yolox, [], W * 4, H * 4);
    const spec = { ...servingSpec(create(DetectorSpecSchema, { ...yolox, numClasses: 80 })), inputWidth: W * 4, inputHeight: H * 4 };
    const error = await detector.load(spec, model, 2).catch((e: unknown) => e);
    expect(AppError.is(error, Code.FAILED_PRECONDITION)).toBe(true);
    expect((error as AppError).problems).toEqual(['output "output" dimension 2 must be 85, got 6']);
    await expect(detector.detect("d1", [])).rejects.toThrow(/not loaded/);
  });
});
