import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { COCO17, type KeypointCodecSpec } from "@poseloop/pose";
import { createRgbImage, encodePng, fillCircle, fillRect, IMAGENET_NORMALIZATION, type RgbImage } from "@poseloop/vision";
import type { ResolvedAugmentation } from "../augmentation.js";
import type { PoseInstance } from "../coco-reader.js";
import { sampleTableFromInstances } from "../sample-table.js";
import type { BadSamplePolicy, BatchBuilderConfig } from "../top-down-batch.js";

export const INPUT = { width: 192, height: 256 } as const;
export const UDP_CODEC: KeypointCodecSpec = { kind: "heatmap", unbiased: true, inputSize: INPUT, heatmapSize: { width: 48, height: 64 }, numKeypoints: 17, sigma: 2 };
export const DARK_CODEC: KeypointCodecSpec = { kind: "heatmap", inputSize: INPUT, heatmapSize: { width: 48, height: 64 }, numKeypoints: 17, sigma: 2, refinement: "dark" };

/** A textured picture (gradients and blocks), so crops of different regions or flips differ. */
export function texturedImage(width: number, height: number): RgbImage {
  const image = createRgbImage(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 3 * (y * width + x);
      image.data[i] = (x * 3) % 256;
      image.data[i + 1] = (y * 5) % 256;
      image.data[i + 2] = ((x ^ y) * 7) % 256;
    }
  }
  fillRect(image, width * 0.3, height * 0.2, width * 0.2, height * 0.4, [250, 40, 40]);
  fillCircle(image, width * 0.6, height * 0.5, width * 0.1, [30, 240, 90]);
  return image;
}

export async function writePng(dir: string, name: string, image: RgbImage): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, await encodePng(image));
  return path;
}

/** A COCO-17 instance with every joint labelled on a grid inside the box, unless `visibility` says otherwise. */
export function gridInstance(overrides: Partial<PoseInstance> & Pick<PoseInstance, "imagePath" | "imageWidth" | "imageHeight">): PoseInstance {
  const bbox = overrides.bbox ?? { x: 60, y: 40, width: 120, height: 170 };
  const keypoints = new Float32Array(34);
  for (let j = 0; j < 17; j++) {
    keypoints[2 * j] = bbox.x + bbox.width * (0.2 + 0.6 * ((j % 3) / 2));
    keypoints[2 * j + 1] = bbox.y + bbox.height * (0.1 + 0.8 * (j / 16));
  }
  return {
    annotationId: 1,
    imageId: 1,
    bbox,
    keypoints,
    visibility: new Uint8Array(17).fill(2),
    numKeypoints: 17,
    area: bbox.width * bbox.height,
    ...overrides,
  };
}

export function builderConfig(
  instances: readonly PoseInstance[],
  options: { augmentation?: ResolvedAugmentation; codec?: KeypointCodecSpec; seed?: number; badSamples?: BadSamplePolicy; diskDir?: string; memoryBytes?: number } = {},
): BatchBuilderConfig {
  return {
    table: sampleTableFromInstances(instances, 17),
    inputSize: INPUT,
    codec: options.codec ?? UDP_CODEC,
    schema: COCO17,
    padding: 1.25,
    normalization: IMAGENET_NORMALIZATION,
    augmentation: options.augmentation,
    seed: options.seed ?? 1,
    badSamples: options.badSamples ?? "fail",
    imageCache: { ...(options.diskDir === undefined ? {} : { diskDir: options.diskDir }), ...(options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes }) },
    readTimeoutMs: 10_000,
  };
}

/** Whether two typed arrays hold the same bytes (fast where toEqual walks element by element). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
