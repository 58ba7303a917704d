import { isAbsolute, relative, sep } from "node:path";
import { AppError, Code } from "@poseloop/core";
import type { BatchBuilderConfig } from "@poseloop/data";

/** How the PyTorch engine loads batches itself (TRAIN.DATA_LOADER engine). */
export interface EngineDataOptions {
  /** torch.utils.data worker processes per engine process (WORKERS); 0 builds batches in the training process. */
  readonly workers: number;
  /** Batches each worker builds ahead. */
  readonly prefetch: number;
  /** The trainer's roots: image paths under them travel relative, for every node to resolve against its own. */
  readonly roots: { readonly dataRoot: string; readonly workDir: string };
}

/**
 * `path` as ["data" | "work", relative path]. The trainer reads images only under its roots, and every node's
 * engine resolves them under its own, so a path elsewhere is a defect upstream, not something to send.
 */
function rooted(path: string, roots: EngineDataOptions["roots"]): [string, string] {
  for (const [name, root] of [["data", roots.dataRoot], ["work", roots.workDir]] as const) {
    const inside = relative(root, path);
    if (inside !== "" && !inside.startsWith(`..${sep}`) && inside !== ".." && !isAbsolute(inside)) return [name, inside.split(sep).join("/")];
  }
  throw new AppError(Code.INTERNAL, `image ${path} lies outside the trainer's data root and work dir`);
}

/**
 * The engine's `data` request (PROTOCOL.md): libs/data's BatchBuilderConfig as JSON — typed arrays as lists
 * (JSON writes a NaN annotation id as null), image paths against the roots — and the loader's settings. The
 * disk cache of decoded images stays the trainer's: the engine keeps its decoded images in memory.
 */
export function engineDataRequest(config: BatchBuilderConfig, options: EngineDataOptions): Record<string, unknown> {
  const { table } = config;
  return {
    config: {
      table: {
        kind: table.kind,
        count: table.count,
        numKeypoints: table.numKeypoints,
        imagePaths: table.imagePaths.map((path) => rooted(path, options.roots)),
        imageIndex: Array.from(table.imageIndex),
        imageIds: Array.from(table.imageIds),
        imageSizes: Array.from(table.imageSizes),
        annotationIds: Array.from(table.annotationIds),
        boxes: Array.from(table.boxes),
        scores: Array.from(table.scores),
        areas: Array.from(table.areas),
        keypoints: Array.from(table.keypoints),
        visibility: Array.from(table.visibility),
      },
      inputSize: config.inputSize,
      codec: config.codec,
      schema: config.schema,
      padding: config.padding,
      normalization: config.normalization,
      augmentation: config.augmentation ?? null,
      seed: config.seed,
      badSamples: config.badSamples,
      imageCache: config.imageCache.memoryBytes === undefined ? {} : { memoryBytes: config.imageCache.memoryBytes },
      readTimeoutMs: config.readTimeoutMs,
    },
    workers: options.workers,
    prefetch: options.prefetch,
  };
}
