import { realpath, stat } from "node:fs/promises";
import { isAbsolute, relative as relativePath, resolve, sep } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";

// Both the checks of a config before its job is accepted and the runs that read the files need to know where
// data may live; it lives here, below both, so that neither reaches into the other.

/** Where the trainer may read datasets and write generated ones. */
export interface DataRoots {
  /** COCO dataset roots resolve under it. */
  readonly dataRoot: string;
  /** Generated (synthetic) datasets are cached under it. */
  readonly workDir: string;
}

function isInside(root: string, path: string): boolean {
  const rel = relativePath(root, path);
  return rel === "" || (!isAbsolute(rel) && rel !== ".." && !rel.startsWith(`..${sep}`));
}

/**
 * The real path of `relative` inside `root`, for a dataset or output path named by a client. Absolute paths
 * are accepted when they lie inside the root. Throws PERMISSION_DENIED for a path that leaves the root, by
 * `..`, by being absolute elsewhere, or through a symbolic link whose target is outside; INVALID_ARGUMENT
 * when the path does not exist. Messages name `what` (the YAML key) and the path as the client wrote it,
 * never the server's own directories; those stay in the cause.
 */
export async function resolveUnder(root: string, relative: string, what: string): Promise<string> {
  if (relative.length === 0) throw new AppError(Code.INVALID_ARGUMENT, `${what}: a path is required`);
  if (relative.includes("\0")) throw new AppError(Code.INVALID_ARGUMENT, `${what}: the path contains a NUL character`);
  const lexicalRoot = resolve(root);
  let realRoot: string;
  try {
    realRoot = await realpath(lexicalRoot);
  } catch (error) {
    throw new AppError(Code.FAILED_PRECONDITION, `${what}: the trainer's root directory is not available`, { cause: error });
  }
  const candidate = resolve(lexicalRoot, relative);
  // The root may itself be reached through a link; an absolute path may name either spelling of it.
  if (!isInside(lexicalRoot, candidate) && !isInside(realRoot, candidate)) {
    throw new AppError(Code.PERMISSION_DENIED, `${what}: ${relative} is outside the allowed root`, { cause: { root: lexicalRoot, path: candidate } });
  }
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new AppError(Code.INVALID_ARGUMENT, `${what}: ${relative} does not exist`, { cause: error });
    throw AppError.from(error);
  }
  if (!isInside(realRoot, real)) {
    throw new AppError(Code.PERMISSION_DENIED, `${what}: ${relative} leads outside the allowed root through a symbolic link`, {
      cause: { root: realRoot, path: candidate, target: real },
    });
  }
  return real;
}

async function kindOf(path: string) {
  try {
    return await stat(path);
  } catch (error) {
    throw AppError.from(error);
  }
}

/**
 * Problems with the files of a COCO dataset under the trainer's data root: the root folder, the annotation
 * files and image folders of both splits, and the detections file when validation uses it. Missing or
 * wrong-kind paths are problems; a path leaving the data root throws PERMISSION_DENIED. Other dataset kinds
 * and a config without a COCO root (resolveTrainConfig reports that) give no problems.
 */
export async function datasetProblems(config: TrainConfig, dataRoot: string): Promise<string[]> {
  const coco = config.data?.coco;
  if (config.data?.kind !== DatasetKind.COCO || coco === undefined || coco.root.length === 0) return [];
  const problems: string[] = [];
  const collect = async <T>(check: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await check();
    } catch (error) {
      if (AppError.is(error, Code.INVALID_ARGUMENT)) {
        problems.push(error.message);
        return undefined;
      }
      throw error;
    }
  };
  const root = await collect(() => resolveUnder(dataRoot, coco.root, "DATASET.ROOT"));
  if (root === undefined) return problems;
  if (!(await kindOf(root)).isDirectory()) return [`DATASET.ROOT: ${coco.root} is not a directory`];
  const entries: { path: string; what: string; kind: "file" | "directory" }[] = [
    { path: coco.trainAnnotations, what: "DATASET.TRAIN_SET (data.coco.train_annotations)", kind: "file" },
    { path: coco.trainImages, what: "DATASET.TRAIN_SET (data.coco.train_images)", kind: "directory" },
    { path: coco.valAnnotations, what: "DATASET.TEST_SET (data.coco.val_annotations)", kind: "file" },
    { path: coco.valImages, what: "DATASET.TEST_SET (data.coco.val_images)", kind: "directory" },
  ];
  if (config.validation?.useGtBoxes !== true) {
    entries.push({ path: coco.valDetections, what: "TEST.COCO_BBOX_FILE (data.coco.val_detections)", kind: "file" });
  }
  // Paths of the splits are relative to the dataset's folder and may not leave it.
  for (const entry of entries) {
    if (entry.path.length === 0) continue;
    const real = await collect(() => resolveUnder(root, entry.path, entry.what));
    if (real === undefined) continue;
    const info = await kindOf(real);
    if (entry.kind === "file" ? !info.isFile() : !info.isDirectory()) problems.push(`${entry.what}: ${entry.path} is not a ${entry.kind}`);
  }
  return problems;
}
