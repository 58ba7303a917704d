import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { DetectionImage } from "@poseloop/data";
import { plantedDetector } from "@poseloop/detect/testing";
import { DetectorHead, DetectorSpecSchema, ResizeMode } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { makeTempDir } from "@poseloop/testkit";
import { createRgbImage, encodeJpeg } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DetectorRunContract } from "../experiment/model-contract.js";
import { DetectorEvaluator } from "./detector-evaluator.js";

// Two 200x100 pictures with the same two people, letterboxed into 64x64 (scale 0.32, top-left, the bottom half
// padding): a detector that finds exactly those people, in input pixels, must score box AP 1.
const FRAME = { width: 200, height: 100 };
const INPUT = { width: 64, height: 64 };
const SCALE = 0.32;
const PEOPLE = [
  [20, 10, 50, 80],
  [120, 5, 40, 90],
] as const;
const spec = create(DetectorSpecSchema, { head: DetectorHead.CENTERNET, numClasses: 1, personClass: 0, strides: [4], resize: ResizeMode.LETTERBOX, scoreThreshold: 0.3, iouThreshold: 0.5, maxDetections: 100, outputNames: ["centers", "sizes", "offsets"] });
const contract: DetectorRunContract = { kind: "detector", modelConfig: { architecture: "detector-lite", inputWidth: 64, inputHeight: 64, numKeypoints: 0 }, detector: spec, inputWidth: 64, inputHeight: 64, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] };

let dir: { path: string; remove: () => Promise<void> };
let images: DetectionImage[];

beforeAll(async () => {
  dir = await makeTempDir("poseloop-detector-eval-");
  const jpeg = await encodeJpeg(createRgbImage(FRAME.width, FRAME.height, [90, 120, 150]));
  images = [];
  for (const imageId of [3, 4]) {
    const imagePath = join(dir.path, `${imageId}.jpg`);
    await writeFile(imagePath, jpeg);
    images.push({ imageId, imagePath, ...FRAME, objects: PEOPLE.map((bbox) => ({ bbox, area: bbox[2] * bbox[3], iscrowd: false })) });
  }
});
afterAll(() => dir?.remove());

/** A detector finding `boxes` ([x, y, w, h] in frame pixels) mapped into the input by `scale`. */
function finding(boxes: readonly (readonly [number, number, number, number])[], scale: number): Uint8Array {
  return plantedDetector(
    spec,
    boxes.map(([x, y, w, h]) => ({ x1: x * scale, y1: y * scale, x2: (x + w) * scale, y2: (y + h) * scale, score: 0.9 })),
    INPUT.width,
    INPUT.height,
  );
}

describe("DetectorEvaluator", () => {
  it("scores a detector that finds every person at box AP 1, its boxes mapped from the letterbox back to the pictures", async () => {
    const evaluator = new DetectorEvaluator(create(TrainConfigSchema, { intraOpThreads: 1 }), contract, { name: "planted/val", images });
    const evaluation = await evaluator.evaluate(finding(PEOPLE, SCALE));
    expect(evaluation).toMatchObject({ dataset: "planted/val", numImages: 2, numInstances: 4, flipTest: false });
    expect(evaluation.stats.ap).toBeCloseTo(1, 6);
    expect(evaluation.stats.ar50).toBeCloseTo(1, 6);
    expect(evaluation.servingRecall50).toBeCloseTo(1, 6);
  });

  it("scores boxes left in input pixels (not mapped back) and a missed person as a user would see them", async () => {
    const evaluator = new DetectorEvaluator(create(TrainConfigSchema, { intraOpThreads: 1 }), contract, { name: "planted/val", images });
    // A box planted at frame size (as if the letterbox had not been applied) maps back 1/0.32 too large: no match.
    expect((await evaluator.evaluate(finding([PEOPLE[0]], 1))).stats.ap).toBe(0);
    // One of two people found in each picture: recall at IoU 0.5 is a half.
    const half = await evaluator.evaluate(finding([PEOPLE[0]], SCALE));
    expect(half.stats.ar50).toBeCloseTo(0.5, 6);
    expect(half.servingRecall50).toBeCloseTo(0.5, 6);
  });

  it("calibrates int8 with the letterboxed validation pictures", async () => {
    const evaluator = new DetectorEvaluator(create(TrainConfigSchema, {}), contract, { name: "planted/val", images });
    const feeds = await evaluator.calibrationFeeds(8);
    expect(feeds.map((feed) => feed["input"]?.dims)).toEqual([[2, 3, 64, 64]]);
  });
});
