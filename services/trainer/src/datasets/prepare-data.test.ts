import { cp, mkdir, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { COCO17, type KeypointSchema } from "@poseloop/pose";
import { generateSyntheticDataset, readCocoKeypoints } from "@poseloop/data";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseExperiment } from "../experiment/experiment.js";
import { resolveTrainConfig } from "../experiment/validate.js";
import { prepareData, prepareDetectionData, prepareValidation } from "./prepare-data.js";

const schema: KeypointSchema = COCO17;
let dir: { path: string; remove: () => Promise<void> };
let root: string;

/** A COCO experiment over `coco/` (train2017, val2017 unless held out) with TEST overrides. */
function config(overrides: Record<string, string>, split: "val2017" | "holdout" = "val2017") {
  const yaml = [
    "DATASET:",
    "  DATASET: coco",
    "  ROOT: coco",
    "  TRAIN_SET: train2017",
    ...(split === "val2017" ? ["  TEST_SET: val2017"] : ["  VAL_FRACTION: 0.5"]),
    "MODEL:",
    "  NAME: pose_lite",
    "  IMAGE_SIZE: [48, 64]",
    "  HEATMAP_SIZE: [12, 16]",
    "TRAIN:",
    "  END_EPOCH: 1",
    "  LR: 0.001",
    "  OPTIMIZER: adam",
    "  BATCH_SIZE_PER_GPU: 4",
    "PUBLISH:",
    "  MODEL_NAME: test",
  ].join("\n");
  const parsed = parseExperiment(yaml, overrides);
  expect(parsed.problems).toEqual([]);
  const resolved = resolveTrainConfig(parsed.config!);
  expect(resolved.problems).toEqual([]);
  return resolved.config;
}

/** Every GT box of `split` as a detection scoring 0.9, plus a low-scoring stray box and a box of another category per image. */
async function writeDetections(split: string, file: string): Promise<void> {
  const dataset = await readCocoKeypoints({ dir: join(root, "coco"), split, schema, minKeypoints: 1 });
  const detections = dataset.groundTruthBoxes.flatMap((image) => [
    ...image.boxes.map((box) => ({ image_id: image.imageId, category_id: 1, bbox: [box.bbox.x, box.bbox.y, box.bbox.width, box.bbox.height], score: 0.9 })),
    { image_id: image.imageId, category_id: 1, bbox: [1, 1, 10, 20], score: 0.05 },
    { image_id: image.imageId, category_id: 2, bbox: [2, 2, 10, 20], score: 0.99 },
  ]);
  await mkdir(join(root, "coco", "dets"), { recursive: true });
  await writeFile(join(root, "coco", "dets", file), JSON.stringify(detections));
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-datasets-");
  root = dir.path;
  const scene = { width: 96, height: 128, minPeople: 1, maxPeople: 2 };
  await generateSyntheticDataset({ ...scene, dir: join(root, "coco"), split: "train2017", count: 6, seed: 1 });
  await generateSyntheticDataset({ ...scene, dir: join(root, "coco"), split: "val2017", count: 4, seed: 1, firstImageId: 7 });
  await writeDetections("val2017", "val.json");
  await writeDetections("train2017", "train.json");
  // A copy of the validation split with no training split beside it.
  await generateSyntheticDataset({ ...scene, dir: join(root, "val-only"), split: "val2017", count: 4, seed: 1, firstImageId: 7 });
}, 60_000);

afterAll(() => dir?.remove());

const roots = () => ({ dataRoot: root, workDir: join(root, "work") });

describe("prepareData's validation boxes", () => {
  it("are the ground-truth boxes with TEST.USE_GT_BBOX", async () => {
    const data = await prepareData(config({ "TEST.USE_GT_BBOX": "true", "TEST.COCO_BBOX_FILE": "dets/val.json" }), roots(), schema);
    const val = await readCocoKeypoints({ dir: join(root, "coco"), split: "val2017", schema, minKeypoints: 1 });
    expect(data.validation.name).toBe("coco/val2017");
    expect(data.validation.images).toEqual(val.groundTruthBoxes);
  });

  it("are the person detections of TEST.COCO_BBOX_FILE scoring at least TEST.IMAGE_THRE without it", async () => {
    const val = await readCocoKeypoints({ dir: join(root, "coco"), split: "val2017", schema, minKeypoints: 1 });
    const data = await prepareData(config({ "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets/val.json", "TEST.IMAGE_THRE": "0.1" }), roots(), schema);
    expect(data.validation.images.map((image) => image.imageId)).toEqual(val.groundTruthBoxes.map((image) => image.imageId));
    for (const [i, image] of data.validation.images.entries()) {
      const gt = val.groundTruthBoxes[i]!;
      expect(image.boxes.map((box) => box.score)).toEqual(gt.boxes.map(() => 0.9));
      expect(image.boxes.map((box) => box.bbox)).toEqual(gt.boxes.map((box) => box.bbox));
    }

    // IMAGE_THRE 0 keeps the stray low-scoring person box too; the other category never counts.
    const all = await prepareData(config({ "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets/val.json", "TEST.IMAGE_THRE": "0" }), roots(), schema);
    expect(all.validation.images.map((image) => image.boxes.length)).toEqual(val.groundTruthBoxes.map((image) => image.boxes.length + 1));
    expect(all.validation.images.flatMap((image) => image.boxes.map((box) => box.score)).filter((score) => score === 0.99)).toEqual([]);
  });

  it("of a held-out part of the training split keep only that part's detections", async () => {
    const data = await prepareData(config({ "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets/train.json", "TEST.IMAGE_THRE": "0.1" }, "holdout"), roots(), schema);
    expect(data.validation.name).toBe("coco/train2017-holdout");
    expect(data.validation.images.map((image) => image.imageId)).toEqual([4, 5, 6]);
    expect(data.validation.images.every((image) => image.boxes.length > 0 && image.boxes.every((box) => box.score === 0.9))).toBe(true);
    expect(new Set(data.instances.map((instance) => instance.imageId))).toEqual(new Set([1, 2, 3]));
  });

  it("fail clearly when the detections file belongs to another split or is missing", async () => {
    const wrong = await prepareData(config({ "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets/train.json" }), roots(), schema).catch((error: unknown) => error);
    expect(AppError.is(wrong, Code.INVALID_ARGUMENT)).toBe(true);
    expect((wrong as AppError).message).toMatch(/^TEST\.COCO_BBOX_FILE dets\/train\.json: invalid detections file \(1 problem\): 6 image ids are not in the split/);
    const missing = await prepareData(config({ "TEST.USE_GT_BBOX": "false", "TEST.COCO_BBOX_FILE": "dets/none.json" }), roots(), schema).catch((error: unknown) => error);
    expect(AppError.is(missing, Code.NOT_FOUND) || AppError.is(missing, Code.INVALID_ARGUMENT)).toBe(true);
    expect((missing as AppError).message).toContain("TEST.COCO_BBOX_FILE");
  });
});

describe("prepareValidation", () => {
  it("reads the validation split without the training split, which prepareData needs", async () => {
    const valOnly = config({ "DATASET.ROOT": "val-only", "TEST.USE_GT_BBOX": "true" });
    const validation = await prepareValidation(valOnly, roots(), schema);
    expect(validation.name).toBe("coco/val2017");
    expect(validation.images.map((image) => image.imageId)).toEqual([7, 8, 9, 10]);
    await expect(prepareData(valOnly, roots(), schema)).rejects.toBeInstanceOf(AppError);
  });

  it("of a held-out part still reads the training split it is held out of", async () => {
    const validation = await prepareValidation(config({ "TEST.USE_GT_BBOX": "true" }, "holdout"), roots(), schema);
    expect(validation.name).toBe("coco/train2017-holdout");
    expect(validation.images.map((image) => image.imageId)).toEqual([4, 5, 6]);
  });
});

describe("prepareData's images", () => {
  it("are refused when one is a symbolic link out of the data root, before anything reads it", async () => {
    // A copy of the dataset whose first training image is a link to a file outside the data root.
    const outside = await makeTempDir("poseloop-outside-");
    try {
      await cp(join(root, "coco"), join(root, "linked"), { recursive: true });
      const images = join(root, "linked", "train2017");
      const first = (await readdir(images)).sort()[0]!;
      await cp(join(images, first), join(outside.path, "secret.jpg"));
      await rm(join(images, first));
      await symlink(join(outside.path, "secret.jpg"), join(images, first));
      const error = await prepareData(config({ "DATASET.ROOT": "linked", "TEST.USE_GT_BBOX": "true" }), roots(), schema).catch((e: unknown) => e);
      expect(AppError.is(error, Code.PERMISSION_DENIED)).toBe(true);
      expect((error as AppError).message).toBe(`DATASET.TRAIN_SET: image ${first} leads outside the data root through a symbolic link`);
      expect((error as AppError).message).not.toContain(outside.path);
    } finally {
      await rm(join(root, "linked"), { recursive: true, force: true });
      await outside.remove();
    }
  });

  it("may be links to files elsewhere inside the data root", async () => {
    await cp(join(root, "coco"), join(root, "inside"), { recursive: true });
    try {
      const images = join(root, "inside", "train2017");
      const first = (await readdir(images)).sort()[0]!;
      await mkdir(join(root, "shared-images"), { recursive: true });
      await cp(join(images, first), join(root, "shared-images", first));
      await rm(join(images, first));
      await symlink(join(root, "shared-images", first), join(images, first));
      const data = await prepareData(config({ "DATASET.ROOT": "inside", "TEST.USE_GT_BBOX": "true" }), roots(), schema);
      expect(data.instances.length).toBeGreaterThan(0);
    } finally {
      await rm(join(root, "inside"), { recursive: true, force: true });
    }
  });
});

describe("a detector's data", () => {
  const synthetic = (architecture: "detector_lite" | "pose_lite") => {
    const yaml = [
      "DATASET:",
      "  DATASET: synthetic",
      "  SYNTHETIC:",
      "    TRAIN_IMAGES: 6",
      "    VAL_IMAGES: 3",
      "    IMAGE_SIZE: [96, 72]",
      "    MAX_PEOPLE: 3",
      "    SEED: 9",
      "MODEL:",
      `  NAME: ${architecture}`,
      ...(architecture === "pose_lite" ? ["  IMAGE_SIZE: [48, 64]", "  HEATMAP_SIZE: [12, 16]", "TEST:", "  USE_GT_BBOX: true"] : ["  IMAGE_SIZE: [64, 48]"]),
      "TRAIN:",
      "  END_EPOCH: 1",
      "  LR: 0.001",
      "  OPTIMIZER: adam",
      "  BATCH_SIZE_PER_GPU: 2",
      "PUBLISH:",
      "  MODEL_NAME: test",
    ].join("\n");
    const parsed = parseExperiment(yaml);
    expect(parsed.problems).toEqual([]);
    return resolveTrainConfig(parsed.config!).config;
  };

  it("are synthetic scenes of their own (crowds, cut people, several sizes), every person boxed, apart from the pose set of the same options", async () => {
    const data = await prepareDetectionData(synthetic("detector_lite"), roots());
    expect(data.trainName).toBe("synthetic-detection/train");
    expect(data.images).toHaveLength(6);
    expect(data.validation).toMatchObject({ name: "synthetic-detection/val" });
    expect(data.validation.images.map((image) => image.imageId)).toEqual([7, 8, 9]);
    for (const image of [...data.images, ...data.validation.images]) {
      expect([image.width, image.height]).toEqual([96, 72]);
      expect(image.objects.length).toBeGreaterThan(0);
      for (const { bbox } of image.objects) expect(bbox[2] > 0 && bbox[3] > 0).toBe(true);
    }
    const pose = await prepareData(synthetic("pose_lite"), roots(), schema);
    expect(await readdir(join(roots().workDir, "synthetic-detection"))).toHaveLength(1);
    // The same seed and sizes render other pictures for a detector: the pose datasets' cache is never reused.
    const poseBoxes = pose.validation.images.map((image) => image.boxes.map((box) => box.bbox.width));
    const detectorBoxes = data.validation.images.map((image) => image.objects.map((object) => object.bbox[2]));
    expect(detectorBoxes).not.toEqual(poseBoxes);

    // The validation set alone reads no training split.
    const alone = await prepareDetectionData(synthetic("detector_lite"), roots(), false);
    expect(alone.images).toEqual([]);
    expect(alone.validation.images).toEqual(data.validation.images);
  });
});
