import { readFile } from "node:fs/promises";
import { AppError, Code } from "@poseloop/core";
import { PERSON_CATEGORY_ID, type CocoDetection } from "./coco-format.js";
import { invalidFile } from "./coco-keypoint-file.js";
import { clipBox, type CocoKeypointDataset, type ValidationBox, type ValidationImage } from "./coco-reader.js";

export interface DetectionFilter {
  /** Detections scoring below this are dropped; default 0 (keep all, as COCO's published person boxes are used). */
  minScore?: number;
  /** The category to keep; default person (1). */
  categoryId?: number;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);
const isFiniteNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

/** Validates parsed JSON in the COCO results format (an array of {image_id, category_id, bbox, score}). */
export function parseCocoDetections(json: unknown, source = "detections file"): CocoDetection[] {
  if (!Array.isArray(json)) throw invalidFile(source, ["a detections file must hold a JSON array of {image_id, category_id, bbox, score}"]);
  const problems: string[] = [];
  json.forEach((detection, i) => {
    const at = `[${i}]`;
    if (!isObject(detection)) return void problems.push(`${at} must be an object`);
    if (!Number.isSafeInteger(detection["image_id"])) problems.push(`${at}.image_id must be an integer`);
    if (!Number.isSafeInteger(detection["category_id"])) problems.push(`${at}.category_id must be an integer`);
    const bbox = detection["bbox"];
    if (!Array.isArray(bbox) || bbox.length !== 4 || !bbox.every(isFiniteNumber)) problems.push(`${at}.bbox must be 4 numbers [x, y, width, height]`);
    else if ((bbox[2] as number) < 0 || (bbox[3] as number) < 0) problems.push(`${at}.bbox has a negative width or height`);
    if (!isFiniteNumber(detection["score"])) problems.push(`${at}.score must be a number`);
  });
  if (problems.length > 0) throw invalidFile(source, problems);
  return json as CocoDetection[];
}

/** Reads a detections JSON file (COCO results format). */
export async function readCocoDetections(path: string, options: { timeoutMs?: number } = {}): Promise<CocoDetection[]> {
  let text: string;
  try {
    text = await readFile(path, { encoding: "utf8", signal: AbortSignal.timeout(options.timeoutMs ?? 60_000) });
  } catch (error) {
    const mapped = AppError.from(error);
    throw mapped.code === Code.NOT_FOUND ? new AppError(Code.NOT_FOUND, "detections file not found", { cause: error }) : mapped;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new AppError(Code.INVALID_ARGUMENT, "the detections file is not valid JSON", { cause: error });
  }
  return parseCocoDetections(json);
}

/**
 * Validation images of `dataset` with detected person boxes instead of ground truth: every image of the split,
 * each with its detections of the category scoring at least `minScore`, clipped to the image, best first.
 * A detection for an image the split does not have is INVALID_ARGUMENT (the files belong to different splits).
 */
export function detectionBoxes(dataset: CocoKeypointDataset, detections: readonly CocoDetection[], filter: DetectionFilter = {}): ValidationImage[] {
  const minScore = filter.minScore ?? 0;
  const categoryId = filter.categoryId ?? PERSON_CATEGORY_ID;
  const images = new Map(dataset.groundTruthBoxes.map((image) => [image.imageId, image]));
  const boxes = new Map<number, ValidationBox[]>();
  const unknown = new Set<number>();
  for (const detection of detections) {
    const image = images.get(detection.image_id);
    if (image === undefined) {
      unknown.add(detection.image_id);
      continue;
    }
    if (detection.category_id !== categoryId || detection.score < minScore) continue;
    const bbox = clipBox(detection.bbox, image.width, image.height);
    if (bbox === undefined) continue;
    const list = boxes.get(image.imageId) ?? [];
    list.push({ bbox, score: detection.score });
    boxes.set(image.imageId, list);
  }
  if (unknown.size > 0) {
    const ids = [...unknown].slice(0, 10).join(", ");
    throw invalidFile("detections file", [`${unknown.size} image ids are not in the split (${ids}${unknown.size > 10 ? ", ..." : ""})`]);
  }
  return dataset.groundTruthBoxes.map((image) => ({
    ...image,
    boxes: (boxes.get(image.imageId) ?? []).sort((a, b) => b.score - a.score),
  }));
}
