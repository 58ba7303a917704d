import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { ValidationImage } from "@poseloop/data";
import type { EvaluationSet } from "@poseloop/estimator";
import { encodeModel, GraphBuilder, hostTensor, ints } from "@poseloop/onnx";
import { COCO17, evaluateKeypoints, type CocoKeypointGroundTruth, type KeypointSchema } from "@poseloop/pose";
import { HeatmapRefinement } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { Architecture, TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { makeTempDir } from "@poseloop/testkit";
import { keypointSchemaProto } from "@poseloop/train";
import { createRgbImage, encodePng } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { INPUT_NAME, OUTPUT_NAME, runContract, type PoseRunContract } from "../experiment/model-contract.js";
import { ModelEvaluator } from "./model-evaluator.js";

// A run whose TrainConfig declares its own keypoint schema is validated with that schema's OKS sigmas. The model
// answers every crop with the same planted keypoints; each validation picture's ground truth lies a known number
// of pixels to the right of them, so the OKS of each person, and the AP, depend on nothing but the sigmas.

const [W, H, HW, HH] = [48, 64, 12, 16];
/** A box whose padded crop region (x1.25) is the whole 48x64 picture: crop pixels are picture pixels. */
const BOX = { x: 4.8, y: 6.4, width: 38.4, height: 51.2 };
/** How far right of the model's keypoints each picture's ground truth lies, in pixels: OKS from ~1 down to ~0. */
const SHIFTS = [0.5, 1, 1.5, 2, 3, 4, 5, 6];

/** Five hand keypoints, tip sigmas tighter than the wrist's. */
const HAND5: KeypointSchema = {
  name: "hand-5",
  names: ["wrist", "thumb_tip", "index_tip", "middle_tip", "pinky_tip"],
  skeleton: [
    [0, 1],
    [0, 2],
    [0, 3],
    [0, 4],
  ],
  flipPairs: [],
  sigmas: [0.12, 0.03, 0.04, 0.05, 0.06],
};
/**
 * Seventeen body markers, as many as COCO-17 has but with sigmas of their own: scored with COCO-17's instead,
 * the AP would come out wrong without any error.
 */
const MARKERS17: KeypointSchema = {
  name: "markers-17",
  names: Array.from({ length: 17 }, (_, k) => `marker_${k + 1}`),
  skeleton: [],
  flipPairs: [],
  sigmas: Array.from({ length: 17 }, (_, k) => 0.03 + 0.01 * (k % 5)),
};

/** The heatmap cell each keypoint is planted on (stride 4: pixel = 4·cell), every keypoint on its own cell. */
function plantedCells(k: number): (readonly [number, number])[] {
  return Array.from({ length: k }, (_, i) => [1 + 2 * (i % 5), 1 + 3 * Math.floor(i / 5)] as const);
}

/** input → nothing read from it (·0) → the same one-hot heatmaps for every crop: [n, K, HH, HW]. */
function plantedModel(k: number): Uint8Array {
  const g = new GraphBuilder({ name: "planted" });
  const x = g.input(INPUT_NAME, "float32", ["n", 3, H, W]);
  const zero = g.initializer("zero", hostTensor("float32", [1, 3, 1, 1], [0, 0, 0]));
  const nothing = g.op("Conv", [g.op("GlobalAveragePool", [x]), zero], { kernel_shape: ints([1, 1]) });
  const maps = new Float32Array(k * HH * HW);
  plantedCells(k).forEach(([cx, cy], i) => (maps[(i * HH + cy) * HW + cx] = 1));
  const heatmaps = g.op("Add", [nothing, g.initializer("peaks", hostTensor("float32", [1, k, HH, HW], maps))], {}, { shape: ["n", k, HH, HW] });
  g.output(heatmaps, OUTPUT_NAME);
  return encodeModel(g.build());
}

/** A pose run on the lite net at 48x64, heatmaps 12x16, keypoints of `schema`. */
function poseConfig(schema: KeypointSchema): TrainConfig {
  return create(TrainConfigSchema, {
    intraOpThreads: 1,
    model: {
      architecture: Architecture.LITE,
      inputSize: { width: W, height: H },
      codec: { kind: { case: "heatmap", value: { width: HW, height: HH, sigma: 2, refinement: HeatmapRefinement.NONE } } },
      keypointSchema: keypointSchemaProto(schema),
      extra: { case: "lite", value: { channels: [8, 16, 32] } },
      mean: [123.675, 116.28, 103.53],
      std: [58.395, 57.12, 57.375],
    },
  });
}

let dir: { path: string; remove: () => Promise<void> };
let images: ValidationImage[];

beforeAll(async () => {
  dir = await makeTempDir("poseloop-model-evaluator-");
  const png = await encodePng(createRgbImage(W, H, [120, 120, 120]));
  images = [];
  for (let i = 0; i < SHIFTS.length; i++) {
    const imagePath = join(dir.path, `${i + 1}.png`);
    await writeFile(imagePath, png);
    images.push({ imageId: i + 1, imagePath, width: W, height: H, boxes: [{ bbox: BOX, score: 1 }] });
  }
});
afterAll(() => dir?.remove());

/** Each picture's person: the planted keypoints moved right by that picture's shift. */
function shiftedGroundTruths(k: number): CocoKeypointGroundTruth[] {
  return SHIFTS.map((shift, i) => ({
    id: i + 1,
    image_id: i + 1,
    category_id: 1,
    iscrowd: 0,
    bbox: [BOX.x, BOX.y, BOX.width, BOX.height],
    area: BOX.width * BOX.height,
    num_keypoints: k,
    keypoints: plantedCells(k).flatMap(([cx, cy]) => [cx * 4 + shift, cy * 4, 2]),
  }));
}

describe("ModelEvaluator", () => {
  it.each([
    { schema: HAND5, other: HAND5.sigmas.map(() => COCO17.sigmas[0] as number) },
    { schema: MARKERS17, other: COCO17.sigmas },
  ])("scores a run declaring $schema.name with that schema's OKS sigmas", async ({ schema, other }) => {
    const k = schema.names.length;
    const config = poseConfig(schema);
    const contract = runContract(config) as PoseRunContract;
    const set: EvaluationSet = { name: `${schema.name}/val`, images, groundTruths: shiftedGroundTruths(k) };
    const evaluator = new ModelEvaluator(config, contract, set);
    try {
      const evaluation = await evaluator.evaluate(plantedModel(k), "planted");
      // The model put every keypoint where it was planted: each person's error is exactly its picture's shift.
      expect(evaluation.detections).toHaveLength(SHIFTS.length);
      for (const detection of evaluation.detections) {
        plantedCells(k).forEach(([cx, cy], i) => {
          expect(detection.keypoints[3 * i]).toBeCloseTo(cx * 4, 3);
          expect(detection.keypoints[3 * i + 1]).toBeCloseTo(cy * 4, 3);
        });
      }
      const planted = evaluation.detections.map((detection) => ({ ...detection, keypoints: plantedCells(k).flatMap(([cx, cy], i) => [cx * 4, cy * 4, detection.keypoints[3 * i + 2] ?? 0]) }));
      const ap = (sigmas: readonly number[]): number => evaluateKeypoints(set.groundTruths, planted, SHIFTS.map((_, i) => i + 1), { sigmas }).stats.ap;
      const expected = ap(schema.sigmas);
      // The shifts straddle the OKS thresholds: another set of sigmas gives another AP, so this check can fail.
      expect(Math.abs(ap(other) - expected)).toBeGreaterThan(0.05);
      expect(expected).toBeGreaterThan(0);
      expect(expected).toBeLessThan(1);
      expect(evaluation.stats.ap).toBeCloseTo(expected, 9);
      expect(evaluation.numInstances).toBe(SHIFTS.length);
    } finally {
      await evaluator.close();
    }
  });
});
