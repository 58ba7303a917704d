import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { COCO17 } from "@poseloop/pose";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { personCategory, type CocoKeypointAnnotation, type CocoKeypointFile } from "./coco-format.js";
import { detectionBoxes, readCocoDetections } from "./coco-detections.js";
import { readCocoKeypoints } from "./coco-reader.js";
import { writeCocoKeypoints } from "./coco-writer.js";

/** 17 keypoints, the first `labelled` at (10 + j, 20 + j) with visibility 2. */
function keypoints(labelled: number): number[] {
  return Array.from({ length: 17 }, (_, j) => (j < labelled ? [10 + j, 20 + j, 2] : [0, 0, 0])).flat();
}

function annotation(id: number, imageId: number, labelled: number, extra: Partial<CocoKeypointAnnotation> = {}): CocoKeypointAnnotation {
  return { id, image_id: imageId, category_id: 1, keypoints: keypoints(labelled), num_keypoints: labelled, bbox: [5, 10, 40, 60], area: 1500, iscrowd: 0, ...extra };
}

function validFile(): CocoKeypointFile {
  return {
    images: [
      { id: 1, file_name: "000000000001.jpg", width: 64, height: 96 },
      { id: 2, file_name: "000000000002.jpg", width: 64, height: 96 },
    ],
    annotations: [
      annotation(10, 1, 17),
      annotation(11, 1, 0),
      annotation(12, 2, 3, { bbox: [50, 80, 40, 40] }),
      annotation(13, 2, 5, { iscrowd: 1 }),
      annotation(14, 2, 4, { bbox: [70, 0, 10, 10] }),
    ],
    categories: [personCategory(COCO17)],
  };
}

async function expectError(promise: Promise<unknown>, code: Code): Promise<AppError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(AppError.is(error, code)).toBe(true);
  return error as AppError;
}

describe("COCO keypoint files", () => {
  let temp: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    temp = await makeTempDir("poseloop-coco-");
  });
  afterAll(async () => {
    await temp.remove();
  });

  it("writes the standard layout and reads it back with the filters applied", async () => {
    const dir = join(temp.path, "ok");
    const { annotationsPath, imagesDir } = await writeCocoKeypoints(dir, "val2017", validFile());
    expect(annotationsPath).toBe(join(dir, "annotations", "person_keypoints_val2017.json"));
    expect(imagesDir).toBe(join(dir, "val2017"));

    const dataset = await readCocoKeypoints({ dir, split: "val2017" });
    // 11 has no labelled keypoint, 13 is a crowd, 14 lies outside its image.
    expect(dataset.instances.map((instance) => instance.annotationId)).toEqual([10, 12]);
    const [first, second] = dataset.instances;
    expect(first!.imagePath).toBe(join(imagesDir, "000000000001.jpg"));
    expect([...first!.keypoints.subarray(0, 4)]).toEqual([10, 20, 11, 21]);
    expect(first!.visibility[16]).toBe(2);
    // Boxes are clipped to the image.
    expect(second!.bbox).toEqual({ x: 50, y: 80, width: 14, height: 16 });
    expect(dataset.groundTruthBoxes.map((image) => image.boxes.length)).toEqual([1, 1]);

    const loose = await readCocoKeypoints({ dir, split: "val2017", minKeypoints: 0, dropCrowd: false });
    expect(loose.instances.map((instance) => instance.annotationId)).toEqual([10, 11, 12, 13]);
    const strict = await readCocoKeypoints({ dir, split: "val2017", minKeypoints: 10 });
    expect(strict.instances.map((instance) => instance.annotationId)).toEqual([10]);
  });

  it("reports every problem of a hand-broken file", async () => {
    const dir = join(temp.path, "broken");
    await mkdir(join(dir, "annotations"), { recursive: true });
    const file = validFile() as unknown as { images: Record<string, unknown>[]; annotations: Record<string, unknown>[]; categories: Record<string, unknown>[] };
    file.images.push({ id: 1, file_name: "../escape.jpg", width: 0, height: 10 });
    file.annotations[0]!["keypoints"] = keypoints(17).slice(0, 50);
    file.annotations[1]!["image_id"] = 99;
    file.annotations[2]!["keypoints"] = keypoints(3).map((value, i) => (i === 2 ? 3 : i === 4 ? Number.NaN : value));
    file.annotations[3]!["num_keypoints"] = 4;
    file.annotations[4]!["bbox"] = [1, 2, -3];
    file.annotations[4]!["area"] = "big";
    file.annotations[4]!["id"] = 10;
    file.annotations[4]!["iscrowd"] = 2;
    file.categories[0]!["keypoints"] = [...COCO17.names.slice(0, 16), "tail"];
    await writeFile(join(dir, "annotations", "person_keypoints_val.json"), JSON.stringify(file));

    const error = await expectError(readCocoKeypoints({ dir, split: "val" }), Code.INVALID_ARGUMENT);
    const expected = [
      /images\[2\]\.id 1 is used twice/,
      /images\[2\].*file_name "\.\.\/escape\.jpg" must be a relative path/,
      /images\[2\].* width and height must be positive integers/,
      /annotations\[0\] \(id 10\)\.keypoints must be 51 numbers .* got 50/,
      /annotations\[1\] \(id 11\)\.image_id 99 names no image/,
      /annotations\[2\] \(id 12\)\.keypoints: visibility of nose must be 0, 1 or 2/,
      /annotations\[2\] \(id 12\)\.keypoints: left_eye has non-numeric coordinates/,
      /annotations\[3\] \(id 13\)\.num_keypoints is 4 but 5 keypoints are labelled/,
      /annotations\[4\]\.id 10 is used twice/,
      /annotations\[4\] \(id 10\)\.bbox must be 4 numbers/,
      /annotations\[4\] \(id 10\)\.area must be a non-negative number/,
      /annotations\[4\] \(id 10\)\.iscrowd must be 0 or 1/,
      /categories\[0\]\.keypoints\[16\] is "tail"; schema coco-17 expects "right_ankle"/,
    ];
    for (const pattern of expected) expect(error.problems.some((problem) => pattern.test(problem)), String(pattern)).toBe(true);
    expect(error.problems).toHaveLength(expected.length);
    expect(error.message).toMatch(/invalid annotation file for split "val" \(13 problems\)/);
  });

  it("says what is wrong with a missing, non-JSON or non-object file", async () => {
    const dir = join(temp.path, "odd");
    await mkdir(join(dir, "annotations"), { recursive: true });
    await expectError(readCocoKeypoints({ dir, split: "none" }), Code.NOT_FOUND);
    await writeFile(join(dir, "annotations", "person_keypoints_text.json"), "{ not json");
    await expectError(readCocoKeypoints({ dir, split: "text" }), Code.INVALID_ARGUMENT);
    await writeFile(join(dir, "annotations", "person_keypoints_list.json"), "[1, 2]");
    const error = await expectError(readCocoKeypoints({ dir, split: "list" }), Code.INVALID_ARGUMENT);
    expect(error.problems).toHaveLength(1);
    await expectError(readCocoKeypoints({ dir, split: "../etc" }), Code.INVALID_ARGUMENT);
    const missingImages = await expectError(readCocoKeypoints({ dir: join(temp.path, "ok"), split: "val2017", checkImageFiles: true }), Code.INVALID_ARGUMENT);
    expect(missingImages.problems).toHaveLength(2);
  });

  it("reads detections as validation boxes", async () => {
    const dataset = await readCocoKeypoints({ dir: join(temp.path, "ok"), split: "val2017" });
    const path = join(temp.path, "detections.json");
    await writeFile(
      path,
      JSON.stringify([
        { image_id: 1, category_id: 1, bbox: [1, 2, 30, 40], score: 0.4 },
        { image_id: 1, category_id: 1, bbox: [3, 4, 30, 40], score: 0.9 },
        { image_id: 2, category_id: 1, bbox: [1, 1, 10, 10], score: 0.01 },
        { image_id: 2, category_id: 3, bbox: [1, 1, 10, 10], score: 0.99 },
      ]),
    );
    const detections = await readCocoDetections(path);
    const images = detectionBoxes(dataset, detections, { minScore: 0.05 });
    expect(images.map((image) => image.boxes.map((box) => box.score))).toEqual([[0.9, 0.4], []]);
    expect(images[0]!.boxes[0]!.bbox).toEqual({ x: 3, y: 4, width: 30, height: 40 });

    expect(() => detectionBoxes(dataset, [{ image_id: 7, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }])).toThrow(/not in the split/);
    await writeFile(path, JSON.stringify([{ image_id: 1, bbox: [0, 0, 1], score: "x" }]));
    const error = await expectError(readCocoDetections(path), Code.INVALID_ARGUMENT);
    expect(error.problems).toHaveLength(3);
  });
});
