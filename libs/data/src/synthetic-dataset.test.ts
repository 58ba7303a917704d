import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir } from "@poseloop/testkit";
import { decodeImage } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCocoKeypoints } from "./coco-reader.js";
import { generateSyntheticDataset, type SyntheticDatasetOptions } from "./synthetic-dataset.js";

describe("generateSyntheticDataset", () => {
  let temp: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    temp = await makeTempDir("poseloop-synthetic-");
  });
  afterAll(async () => {
    await temp.remove();
  });

  const options = (dir: string, overrides: Partial<SyntheticDatasetOptions> = {}): SyntheticDatasetOptions => ({
    dir: join(temp.path, dir),
    split: "train",
    count: 12,
    width: 192,
    height: 256,
    seed: 1234,
    maxPeople: 3,
    ...overrides,
  });

  async function filesOf(result: { annotationsPath: string; imagesDir: string; images: readonly { file_name: string }[] }): Promise<Buffer[]> {
    return Promise.all([result.annotationsPath, ...result.images.map((image) => join(result.imagesDir, image.file_name))].map((path) => readFile(path)));
  }

  it("writes identical bytes for the same seed and different ones for another seed", async () => {
    const first = await filesOf(await generateSyntheticDataset(options("a")));
    const again = await filesOf(await generateSyntheticDataset(options("b", { concurrency: 1 })));
    const other = await filesOf(await generateSyntheticDataset(options("c", { seed: 1235 })));
    expect(first).toHaveLength(13);
    first.forEach((bytes, i) => expect(bytes.equals(again[i]!)).toBe(true));
    expect(first[0]!.equals(other[0]!)).toBe(false);
    const differing = first.slice(1).filter((bytes, i) => !bytes.equals(other[i + 1]!)).length;
    expect(differing).toBe(12);
  });

  it("gives another split with the same seed other pictures", async () => {
    const train = await generateSyntheticDataset(options("split", { count: 3 }));
    const val = await generateSyntheticDataset(options("split", { count: 3, split: "val" }));
    const [trainImage, valImage] = await Promise.all([
      readFile(join(train.imagesDir, train.images[0]!.file_name)),
      readFile(join(val.imagesDir, val.images[0]!.file_name)),
    ]);
    expect(trainImage.equals(valImage)).toBe(false);
  });

  it("reports every invalid option at once", async () => {
    const error: unknown = await generateSyntheticDataset(options("bad", { count: -1, width: 4, maxPeople: 0, occlusion: 2, split: "../x" })).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems.length).toBeGreaterThanOrEqual(5);
  });

  describe("a 50-image dataset read back", () => {
    let dataset: Awaited<ReturnType<typeof readCocoKeypoints>>;
    let generated: Awaited<ReturnType<typeof generateSyntheticDataset>>;
    beforeAll(async () => {
      generated = await generateSyntheticDataset(options("read", { count: 50, seed: 99, maxPeople: 4, occlusion: 0.5 }));
      dataset = await readCocoKeypoints({ dir: join(temp.path, "read"), split: "train", checkImageFiles: true, minKeypoints: 0 });
    });

    it("has consistent counts between the generator, the file and the reader", () => {
      expect(dataset.file.images).toHaveLength(50);
      expect(dataset.file.annotations).toHaveLength(generated.annotations.length);
      expect(dataset.instances).toHaveLength(generated.annotations.length);
      expect(dataset.groundTruthBoxes).toHaveLength(50);
      expect(dataset.groundTruthBoxes.reduce((sum, image) => sum + image.boxes.length, 0)).toBe(generated.annotations.length);
      const perImage = dataset.groundTruthBoxes.map((image) => image.boxes.length);
      expect(Math.max(...perImage)).toBeGreaterThanOrEqual(3);
      expect(Math.max(...perImage)).toBeLessThanOrEqual(4);
      expect(dataset.file.categories[0]!.skeleton).toContainEqual([16, 14]);
    });

    it("uses visibility 0, 1 and 2 consistently with the coordinates", () => {
      const seen = new Set<number>();
      for (const annotation of dataset.file.annotations) {
        const image = dataset.file.images.find((candidate) => candidate.id === annotation.image_id)!;
        let labelled = 0;
        for (let j = 0; j < 17; j++) {
          const [x, y, v] = annotation.keypoints.slice(3 * j, 3 * j + 3) as [number, number, number];
          seen.add(v);
          expect([0, 1, 2]).toContain(v);
          if (v === 0) {
            expect([x, y]).toEqual([0, 0]);
            continue;
          }
          labelled++;
          expect(x).toBeGreaterThanOrEqual(0);
          expect(x).toBeLessThan(image.width);
          expect(y).toBeGreaterThanOrEqual(0);
          expect(y).toBeLessThan(image.height);
        }
        expect(annotation.num_keypoints).toBe(labelled);
      }
      expect([...seen].sort()).toEqual([0, 1, 2]);
    });

    it("puts every visible keypoint inside its person's box, and the box inside the image", () => {
      let visible = 0;
      for (const instance of dataset.instances) {
        const { x, y, width, height } = instance.bbox;
        expect(x).toBeGreaterThanOrEqual(0);
        expect(y).toBeGreaterThanOrEqual(0);
        expect(x + width).toBeLessThanOrEqual(instance.imageWidth);
        expect(y + height).toBeLessThanOrEqual(instance.imageHeight);
        expect(instance.area).toBeGreaterThan(0);
        expect(instance.area).toBeLessThanOrEqual(width * height);
        for (let j = 0; j < 17; j++) {
          if (instance.visibility[j] !== 2) continue;
          visible++;
          const kx = instance.keypoints[2 * j]!;
          const ky = instance.keypoints[2 * j + 1]!;
          expect(kx).toBeGreaterThanOrEqual(x);
          expect(kx).toBeLessThan(x + width);
          expect(ky).toBeGreaterThanOrEqual(y);
          expect(ky).toBeLessThan(y + height);
        }
      }
      expect(visible).toBeGreaterThan(dataset.instances.length * 5);
    });

    it("writes JPEGs of the declared size", async () => {
      for (const image of dataset.groundTruthBoxes.slice(0, 5)) {
        const decoded = await decodeImage(await readFile(image.imagePath), "jpeg");
        expect([decoded.width, decoded.height]).toEqual([image.width, image.height]);
      }
    });
  });
});
