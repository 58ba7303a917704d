import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code, SeededRandom } from "@poseloop/core";
import { COCO17 } from "@poseloop/pose";
import { encodeJpeg } from "@poseloop/vision";
import { cocoLayout, personCategory, type CocoImage, type CocoKeypointAnnotation, type CocoKeypointFile } from "./coco-format.js";
import { writeCocoKeypoints } from "./coco-writer.js";
import { renderSyntheticScene, sceneOptionProblems, type SyntheticSceneOptions } from "./synthetic-scene.js";

export interface SyntheticDatasetOptions extends SyntheticSceneOptions {
  /** The dataset folder; the split is written in the COCO layout under it. */
  readonly dir: string;
  /** The split name, e.g. "train" or "val"; also mixed into the random streams so splits never repeat each other. */
  readonly split: string;
  /** How many images. */
  readonly count: number;
  /** Any safe integer; the same seed and options give byte-identical JSON and JPEG files. */
  readonly seed: number;
  /** Id of the first image (later ones follow); default 1. */
  readonly firstImageId?: number;
  /** JPEG quality 1–100; default 90. */
  readonly jpegQuality?: number;
  /** Images being encoded and written at once while the next ones render; default 4. */
  readonly concurrency?: number;
  /** Stops the generation between images. */
  readonly signal?: AbortSignal;
  /** Deadline for encoding and writing one image; default 30 s. */
  readonly imageTimeoutMs?: number;
}

export interface SyntheticDatasetResult {
  readonly annotationsPath: string;
  readonly imagesDir: string;
  readonly images: readonly CocoImage[];
  readonly annotations: readonly CocoKeypointAnnotation[];
}

/** Bumped whenever a change to the generator changes its output for the same seed. */
export const SYNTHETIC_GENERATOR_VERSION = "1";

/** FNV-1a of a string, so a split's name can pick its random stream. */
function hashName(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

function datasetOptionProblems(options: SyntheticDatasetOptions): string[] {
  const problems = sceneOptionProblems(options);
  if (typeof options.dir !== "string" || options.dir.length === 0) problems.push("dir must be a non-empty path");
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(options.split)) problems.push(`split "${options.split}" must be letters, digits, ".", "_" or "-"`);
  if (!Number.isInteger(options.count) || options.count < 0) problems.push(`count must be a non-negative integer, got ${options.count}`);
  if (!Number.isSafeInteger(options.seed)) problems.push(`seed must be a safe integer, got ${options.seed}`);
  const first = options.firstImageId ?? 1;
  if (!Number.isSafeInteger(first) || first < 0) problems.push(`firstImageId must be a non-negative integer, got ${first}`);
  const quality = options.jpegQuality ?? 90;
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) problems.push(`jpegQuality must be an integer from 1 to 100, got ${quality}`);
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) problems.push(`concurrency must be an integer from 1 to 64, got ${concurrency}`);
  return problems;
}

/**
 * Generates a synthetic COCO-17 keypoint dataset: `count` JPEG images of articulated humanoids with their
 * annotations, written as `annotations/person_keypoints_<split>.json` and `<split>/<id>.jpg` under `dir`.
 * Each image is rendered from its own random stream (seed, split, image id), so the output does not depend
 * on timing or concurrency. Files of an earlier run with other ids are left in place; the annotation file
 * lists only this run's images.
 */
export async function generateSyntheticDataset(options: SyntheticDatasetOptions): Promise<SyntheticDatasetResult> {
  const problems = datasetOptionProblems(options);
  if (problems.length > 0) throw AppError.invalid("synthetic dataset options", problems);
  const { imagesDir } = cocoLayout(options.dir, options.split);
  const firstImageId = options.firstImageId ?? 1;
  const quality = options.jpegQuality ?? 90;
  const limit = options.concurrency ?? 4;
  const timeoutMs = options.imageTimeoutMs ?? 30_000;
  const splitStream = hashName(options.split);
  await mkdir(imagesDir, { recursive: true }).catch((error: unknown) => {
    throw AppError.from(error);
  });

  const images: CocoImage[] = [];
  const annotations: CocoKeypointAnnotation[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  for (let index = 0; index < options.count && failure === undefined; index++) {
    if (options.signal?.aborted === true) {
      failure = new AppError(Code.CANCELLED, "synthetic dataset generation was cancelled", { cause: options.signal.reason });
      break;
    }
    const id = firstImageId + index;
    const scene = renderSyntheticScene(new SeededRandom(options.seed, splitStream, id), options);
    const fileName = `${String(id).padStart(12, "0")}.jpg`;
    images.push({ id, file_name: fileName, width: options.width, height: options.height });
    for (const person of scene.people) {
      annotations.push({
        id: annotations.length + 1,
        image_id: id,
        category_id: 1,
        keypoints: person.keypoints,
        num_keypoints: person.numKeypoints,
        bbox: person.bbox,
        area: person.area,
        iscrowd: 0,
      });
    }
    // Encoding runs on libuv's threads while the next image renders here; jobs record failures instead of
    // rejecting, so none is left unhandled when another fails first.
    const job: Promise<void> = encodeJpeg(scene.image, quality, { timeoutMs })
      .then((bytes) => {
        const signals = [AbortSignal.timeout(timeoutMs), ...(options.signal === undefined ? [] : [options.signal])];
        return writeFile(join(imagesDir, fileName), bytes, { signal: AbortSignal.any(signals) });
      })
      .catch((error: unknown) => {
        failure ??= error;
      })
      .finally(() => inFlight.delete(job));
    inFlight.add(job);
    if (inFlight.size >= limit) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw AppError.from(failure);

  const file: CocoKeypointFile = {
    info: {
      description: "PoseLoop synthetic humanoids (COCO-17 keypoints)",
      version: SYNTHETIC_GENERATOR_VERSION,
      contributor: "@poseloop/data generateSyntheticDataset",
      seed: options.seed,
      split: options.split,
    },
    licenses: [],
    images,
    annotations,
    categories: [personCategory(COCO17)],
  };
  const { annotationsPath } = await writeCocoKeypoints(options.dir, options.split, file);
  return { annotationsPath, imagesDir, images, annotations };
}
