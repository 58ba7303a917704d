import { createHash } from "node:crypto";
import { mkdir, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, sep } from "node:path";
import { AppError, Code } from "@poseloop/core";
import {
  detectionBoxes,
  detectionImagesFromCoco,
  generateSyntheticDataset,
  readCocoDetections,
  readCocoKeypoints,
  SYNTHETIC_GENERATOR_VERSION,
  type CocoKeypointDataset,
  type DetectionImage,
  type PoseInstance,
  type SyntheticSceneOptions,
} from "@poseloop/data";
import { evaluationSetFromCoco, type EvaluationSet } from "@poseloop/estimator";
import { COCO17, type KeypointSchema } from "@poseloop/pose";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { resolveUnder, type DataRoots } from "./data-root.js";

export interface PreparedData {
  readonly trainName: string;
  readonly instances: readonly PoseInstance[];
  readonly validation: EvaluationSet;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Pictures for a detector, each with every person in it, and the set it is validated on. */
export interface PreparedDetectionData {
  readonly trainName: string;
  readonly images: readonly DetectionImage[];
  readonly validation: DetectionSet;
}

/** A detector's validation set: whole pictures with all their people (crowd regions flagged). */
export interface DetectionSet {
  readonly name: string;
  readonly images: readonly DetectionImage[];
}

/**
 * What a detector's synthetic pictures add to a pose dataset's: crowds of overlapping people (half of them
 * behind the other, partly hidden, as walkers at different depths are when they cross), more of them cut by the
 * border, and people from small to large (the renderer's defaults keep the pose datasets as recorded).
 */
export const DETECTION_SCENES = { crowd: 0.35, crowdDepth: 0.5, edgeCut: 0.6, personHeight: [0.15, 0.9] } as const satisfies Pick<
  SyntheticSceneOptions,
  "crowd" | "crowdDepth" | "edgeCut" | "personHeight"
>;

/**
 * A synthetic dataset made once per option set and generator version, then reused: it is written into a
 * temporary folder and renamed into place, so a crash mid-generation never leaves a half dataset behind. A
 * detector's (`detection`) are scenes of their own, in a folder of their own.
 */
async function syntheticDir(config: TrainConfig, workDir: string, signal?: AbortSignal, detection = false): Promise<string> {
  const synthetic = config.data?.synthetic;
  const options = {
    generator: SYNTHETIC_GENERATOR_VERSION,
    train: synthetic?.trainImages ?? 0,
    val: synthetic?.valImages ?? 0,
    width: synthetic?.imageWidth ?? 0,
    height: synthetic?.imageHeight ?? 0,
    maxPeople: synthetic?.maxPeople ?? 4,
    occlusion: synthetic?.occlusion ?? 0,
    seed: String(synthetic?.seed ?? 0n),
    ...(detection ? { detection: DETECTION_SCENES } : {}),
  };
  const key = createHash("sha256").update(JSON.stringify(options)).digest("hex").slice(0, 16);
  const dir = join(workDir, detection ? "synthetic-detection" : "synthetic", key);
  if (await exists(join(dir, ".complete"))) return dir;
  const temp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(temp, { recursive: true });
  try {
    const seed = Number(synthetic?.seed ?? 0n);
    const scene = { width: options.width, height: options.height, minPeople: 1, maxPeople: options.maxPeople, occlusion: options.occlusion, ...(detection ? DETECTION_SCENES : {}) };
    await generateSyntheticDataset({ ...scene, dir: temp, split: "train", count: options.train, seed, ...(signal === undefined ? {} : { signal }) });
    await generateSyntheticDataset({ ...scene, dir: temp, split: "val", count: options.val, seed, firstImageId: options.train + 1, ...(signal === undefined ? {} : { signal }) });
    await writeFile(join(temp, ".complete"), JSON.stringify(options));
    await rm(dir, { recursive: true, force: true });
    await rename(temp, dir);
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
  return dir;
}

/**
 * Checks that every image of a split is, once symbolic links are followed, inside the data root: the
 * annotation file names only relative paths, but an image (or a folder on its way) may be a link to anywhere,
 * and the trainer would read it as pixels into a model that is then published.
 */
async function assertImagesInside(dataset: CocoKeypointDataset, dataRoot: string, what: string): Promise<void> {
  const root = await realpath(dataRoot);
  const names = [...new Set(dataset.file.images.map((image) => image.file_name))];
  const inside = (path: string) => {
    const rel = relative(root, path);
    return rel === "" || (!isAbsolute(rel) && rel !== ".." && !rel.startsWith(`..${sep}`));
  };
  // A bounded number of realpath calls at a time: COCO's train split has 57k images.
  const concurrency = 32;
  for (let start = 0; start < names.length; start += concurrency) {
    await Promise.all(
      names.slice(start, start + concurrency).map(async (name) => {
        const real = await realpath(join(dataset.imagesDir, name)).catch(() => undefined);
        // A missing image is the loader's to report; only one that resolves elsewhere is refused here.
        if (real !== undefined && !inside(real)) {
          throw new AppError(Code.PERMISSION_DENIED, `${what}: image ${name} leads outside the data root through a symbolic link`, { cause: { path: join(dataset.imagesDir, name), target: real } });
        }
      }),
    );
  }
}

/** Reads a COCO split and checks where its images really are. */
async function readCocoSplit(dir: string, split: string, schema: KeypointSchema, minKeypoints: number, dataRoot: string, what: string): Promise<CocoKeypointDataset> {
  const dataset = await readCocoKeypoints({ dir, split, schema, minKeypoints });
  await assertImagesInside(dataset, dataRoot, what);
  return dataset;
}

/** The split name of a COCO-layout path pair ("annotations/person_keypoints_<split>.json", "<split>"). */
function cocoSplit(annotations: string, images: string, what: string): string {
  const split = images.replace(/\/+$/, "");
  if (annotations !== "" && annotations !== `annotations/person_keypoints_${split}.json`) {
    throw new AppError(Code.INVALID_ARGUMENT, `${what}: annotations must be annotations/person_keypoints_${split}.json for images in ${split}/ (the COCO layout), got ${annotations}`);
  }
  return split;
}

/** Holds out the last `fraction` of the images (by id) for validation: their ids, and the split cut down to them. */
function holdOut(dataset: CocoKeypointDataset, fraction: number): { held: ReadonlySet<number>; validation: CocoKeypointDataset } {
  const ids = [...new Set(dataset.file.images.map((image) => image.id))].sort((a, b) => a - b);
  const held = new Set(ids.slice(ids.length - Math.max(1, Math.round(ids.length * fraction))));
  return {
    held,
    validation: {
      ...dataset,
      file: { ...dataset.file, images: dataset.file.images.filter((i) => held.has(i.id)), annotations: dataset.file.annotations.filter((a) => held.has(a.image_id)) },
      instances: dataset.instances.filter((instance) => held.has(instance.imageId)),
      groundTruthBoxes: dataset.groundTruthBoxes.filter((image) => held.has(image.imageId)),
    },
  };
}

/**
 * The validation set of a COCO split: ground-truth boxes (TEST.USE_GT_BBOX), or the person detections of
 * TEST.COCO_BBOX_FILE (relative to DATASET.ROOT) scoring at least TEST.IMAGE_THRE, as the reference evaluates
 * its published numbers. A held-out part of the training split keeps the detections of its own images only.
 */
async function validationSet(config: TrainConfig, dir: string, name: string, split: CocoKeypointDataset, heldOut: boolean): Promise<EvaluationSet> {
  const validation = config.validation;
  const detectionsFile = config.data?.coco?.valDetections ?? "";
  if (validation === undefined || validation.useGtBoxes || detectionsFile === "") return evaluationSetFromCoco(name, split);
  const path = await resolveUnder(dir, detectionsFile, "TEST.COCO_BBOX_FILE");
  try {
    let detections = await readCocoDetections(path);
    if (heldOut) {
      const images = new Set(split.file.images.map((image) => image.id));
      detections = detections.filter((detection) => images.has(detection.image_id));
    }
    return evaluationSetFromCoco(name, split, detectionBoxes(split, detections, { minScore: validation.minDetectionScore }));
  } catch (error) {
    const cause = AppError.from(error);
    throw new AppError(cause.code, `TEST.COCO_BBOX_FILE ${detectionsFile}: ${cause.message}`, { cause: error, ...(cause.problems.length > 0 ? { problems: cause.problems } : {}) });
  }
}

/** Reads (or generates) the training instances and the validation set of a config. */
export async function prepareData(config: TrainConfig, roots: DataRoots, schema: KeypointSchema, signal?: AbortSignal): Promise<PreparedData> {
  const data = await readSplits(config, roots, schema, true, signal);
  return { trainName: data.trainName, instances: data.instances ?? [], validation: data.validation };
}

/**
 * The validation set alone, for measuring a model without training it (a checkpoint's publication): the
 * training split is not read, unless validation is a held-out part of it (DATASET.VAL_FRACTION).
 */
export async function prepareValidation(config: TrainConfig, roots: DataRoots, schema: KeypointSchema, signal?: AbortSignal): Promise<EvaluationSet> {
  return (await readSplits(config, roots, schema, false, signal)).validation;
}

/** The pose side of a config's splits: training instances (a hold-out's without its validation images) and the validation set. */
async function readSplits(config: TrainConfig, roots: DataRoots, schema: KeypointSchema, withTraining: boolean, signal?: AbortSignal): Promise<{ trainName: string; instances: readonly PoseInstance[] | undefined; validation: EvaluationSet }> {
  const splits = await readDatasetSplits(config, roots, { schema, minKeypoints: config.data?.minKeypoints || 1, detection: false }, withTraining, signal);
  const { held, train } = splits;
  // Synthetic validation is always on ground-truth boxes: TEST.COCO_BBOX_FILE names detections of a COCO split.
  const validation =
    splits.cocoDir === undefined
      ? evaluationSetFromCoco(splits.validationName, splits.validation)
      : await validationSet(config, splits.cocoDir, splits.validationName, splits.validation, held !== undefined);
  return { trainName: splits.trainName, instances: held === undefined ? train?.instances : train?.instances.filter((instance) => !held.has(instance.imageId)), validation };
}

/** A config's splits as read, before a pose model or a detector makes its own data of them. */
interface DatasetSplits {
  readonly trainName: string;
  /** The training split, read only when asked for; a hold-out's is always read, as the whole split (its validation images included). */
  readonly train: CocoKeypointDataset | undefined;
  readonly validationName: string;
  readonly validation: CocoKeypointDataset;
  /** The image ids held out of `train` for validation (DATASET.VAL_FRACTION), which training must leave out. */
  readonly held: ReadonlySet<number> | undefined;
  /** The COCO dataset's folder (TEST.COCO_BBOX_FILE is relative to it); undefined for synthetic data. */
  readonly cocoDir: string | undefined;
}

/**
 * Reads (or generates) the splits of a config with the given annotation filter: synthetic data from its cache
 * (a detector's, `detection`, from the detection mix's), or a COCO layout under DATASET.ROOT, validated on
 * DATASET.TEST_SET or on a held-out part of DATASET.TRAIN_SET.
 */
async function readDatasetSplits(
  config: TrainConfig,
  roots: DataRoots,
  filter: { schema: KeypointSchema; minKeypoints: number; detection: boolean },
  withTraining: boolean,
  signal?: AbortSignal,
): Promise<DatasetSplits> {
  const data = config.data;
  const { schema, minKeypoints } = filter;
  if (data?.kind === DatasetKind.SYNTHETIC) {
    const dir = await syntheticDir(config, roots.workDir, signal, filter.detection);
    const train = withTraining ? await readCocoKeypoints({ dir, split: "train", schema, minKeypoints }) : undefined;
    const validation = await readCocoKeypoints({ dir, split: "val", schema, minKeypoints });
    const name = data.name || (filter.detection ? "synthetic-detection" : "synthetic");
    return { trainName: `${name}/train`, train, validationName: `${name}/val`, validation, held: undefined, cocoDir: undefined };
  }
  if (data?.kind === DatasetKind.COCO && data.coco !== undefined) {
    const coco = data.coco;
    const dir = await resolveUnder(roots.dataRoot, coco.root, "DATASET.ROOT");
    const name = data.name || "coco";
    const trainSplit = cocoSplit(coco.trainAnnotations, coco.trainImages, "DATASET.TRAIN_SET");
    if (coco.valImages === "") {
      const fraction = data.valFraction;
      if (!(fraction > 0)) throw new AppError(Code.INVALID_ARGUMENT, "DATASET.TEST_SET is empty and DATASET.VAL_FRACTION is 0: there is nothing to validate on");
      const whole = await readCocoSplit(dir, trainSplit, schema, minKeypoints, roots.dataRoot, "DATASET.TRAIN_SET");
      const split = holdOut(whole, fraction);
      return { trainName: `${name}/${trainSplit}`, train: whole, validationName: `${name}/${trainSplit}-holdout`, validation: split.validation, held: split.held, cocoDir: dir };
    }
    const train = withTraining ? await readCocoSplit(dir, trainSplit, schema, minKeypoints, roots.dataRoot, "DATASET.TRAIN_SET") : undefined;
    const valSplit = cocoSplit(coco.valAnnotations, coco.valImages, "DATASET.TEST_SET");
    const validation = await readCocoSplit(dir, valSplit, schema, minKeypoints, roots.dataRoot, "DATASET.TEST_SET");
    return { trainName: `${name}/${trainSplit}`, train, validationName: `${name}/${valSplit}`, validation, held: undefined, cocoDir: dir };
  }
  throw new AppError(Code.INVALID_ARGUMENT, "the config names no dataset (DATASET.DATASET: coco or synthetic)");
}

/**
 * A detector's training pictures and validation set (whole pictures, every person boxed). Synthetic scenes are
 * the detection mix (DETECTION_SCENES), cached apart from the pose datasets'; a COCO split gives all its
 * annotated people, crowds flagged. `withTraining` false reads the validation set alone.
 */
export async function prepareDetectionData(config: TrainConfig, roots: DataRoots, withTraining = true, signal?: AbortSignal): Promise<PreparedDetectionData> {
  // Every person counts for a detector, seen joints or not: minKeypoints only selects pose instances.
  const splits = await readDatasetSplits(config, roots, { schema: COCO17, minKeypoints: 0, detection: true }, withTraining, signal);
  const { held, train } = splits;
  if (held !== undefined && train !== undefined) {
    // A hold-out's pictures come from one read of the whole split, parted by image.
    const images = detectionImagesFromCoco(train);
    return { trainName: splits.trainName, images: images.filter((image) => !held.has(image.imageId)), validation: { name: splits.validationName, images: images.filter((image) => held.has(image.imageId)) } };
  }
  return { trainName: splits.trainName, images: train === undefined ? [] : detectionImagesFromCoco(train), validation: { name: splits.validationName, images: detectionImagesFromCoco(splits.validation) } };
}
