import { randomUUID } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { AppError } from "@poseloop/core";
import { cocoLayout, type CocoKeypointFile } from "./coco-format.js";

export interface WriteCocoKeypointsOptions {
  /** Deadline for writing the annotation file; default 60 s. */
  timeoutMs?: number;
}

/**
 * Writes `file` as `annotations/person_keypoints_<split>.json` under `dir` and creates the split's image
 * folder; returns both paths. The JSON is written to a temporary file and renamed into place, so a reader
 * never sees half a file. Images are written by the caller into `imagesDir`.
 */
export async function writeCocoKeypoints(
  dir: string,
  split: string,
  file: CocoKeypointFile,
  options: WriteCocoKeypointsOptions = {},
): Promise<{ annotationsPath: string; imagesDir: string }> {
  const { annotationsPath, imagesDir } = cocoLayout(dir, split);
  const signal = AbortSignal.timeout(options.timeoutMs ?? 60_000);
  const temporary = `${annotationsPath}.${randomUUID()}.tmp`;
  try {
    await mkdir(dirname(annotationsPath), { recursive: true });
    await mkdir(imagesDir, { recursive: true });
    await writeFile(temporary, JSON.stringify(file), { signal });
    await rename(temporary, annotationsPath);
  } catch (error) {
    await rm(temporary, { force: true });
    throw AppError.from(error);
  }
  return { annotationsPath, imagesDir };
}
