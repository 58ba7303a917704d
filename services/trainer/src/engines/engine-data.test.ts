import { AppError, Code } from "@poseloop/core";
import { PoseBatchPlan, type PoseInstance, type ValidationImage } from "@poseloop/data";
import { COCO17 } from "@poseloop/pose";
import { describe, expect, it } from "vitest";
import { engineDataRequest } from "./engine-data.js";

const input = { width: 48, height: 64 };
const codec = { kind: "heatmap" as const, inputSize: input, heatmapSize: { width: 12, height: 16 }, numKeypoints: 17, sigma: 2 };

function instance(path: string, id: number): PoseInstance {
  return {
    imageId: id,
    imagePath: path,
    imageWidth: 320,
    imageHeight: 240,
    annotationId: 100 + id,
    bbox: { x: 10, y: 20, width: 60, height: 120 },
    area: 5000,
    keypoints: Float32Array.from({ length: 34 }, (_, i) => 20 + i),
    visibility: new Uint8Array(17).fill(2),
    numKeypoints: 17,
  };
}

describe("engineDataRequest", () => {
  const roots = { dataRoot: "/srv/data", workDir: "/var/poseloop/work" };
  const plan = (paths: string[]) =>
    PoseBatchPlan.create({ source: { instances: paths.map((path, i) => instance(path, i + 1)) }, inputSize: input, codec, batchSize: 1, schema: COCO17, workers: 0 });

  it("sends image paths relative to the root they lie under, and the table as plain JSON", () => {
    const { config } = engineDataRequest(plan(["/srv/data/coco/train2017/1.jpg", "/var/poseloop/work/synthetic/train/2.jpg"]).config, { workers: 3, prefetch: 2, roots }) as {
      config: { table: Record<string, unknown> };
    };
    expect(config.table["imagePaths"]).toEqual([
      ["data", "coco/train2017/1.jpg"],
      ["work", "synthetic/train/2.jpg"],
    ]);
    const json = JSON.parse(JSON.stringify(config)) as { table: { boxes: number[]; keypoints: number[]; count: number } };
    expect(json.table.count).toBe(2);
    expect(json.table.boxes.slice(0, 4)).toEqual([10, 20, 60, 120]);
    expect(json.table.keypoints).toHaveLength(2 * 34);
  });

  it("writes a validation box's missing annotation id as null", () => {
    const boxes: ValidationImage[] = [{ imageId: 7, imagePath: "/srv/data/val/7.jpg", width: 320, height: 240, boxes: [{ bbox: { x: 1, y: 2, width: 30, height: 40 }, score: 0.9 }] }];
    const validation = PoseBatchPlan.create({ source: { boxes }, inputSize: input, codec, batchSize: 1, mode: "validation", workers: 0 });
    const json = JSON.parse(JSON.stringify(engineDataRequest(validation.config, { workers: 1, prefetch: 2, roots }))) as { config: { table: { annotationIds: unknown[] } } };
    expect(json.config.table.annotationIds).toEqual([null]);
  });

  it("refuses an image outside both roots instead of sending its absolute path", () => {
    const outside = plan(["/srv/data/../secrets/1.jpg"]);
    const error = (() => {
      try {
        engineDataRequest(outside.config, { workers: 1, prefetch: 2, roots });
        return undefined;
      } catch (caught) {
        return AppError.from(caught);
      }
    })();
    expect(error?.code).toBe(Code.INTERNAL);
    expect(error?.message).toContain("outside the trainer's data root and work dir");
  });
});
