import { readFile } from "node:fs/promises";
import { AppError, Code } from "@poseloop/core";
import type { CocoKeypointDataset, ValidationImage } from "@poseloop/data";
import { CocoKeypointMetric, type CocoKeypointGroundTruth, type CocoKeypointMetricDetection, type CocoKeypointStats } from "@poseloop/pose";
import type { DecodedFrameCache } from "./frame-cache.js";
import type { FrameImage, FrameJob } from "./frame-job.js";
import type { PoseEstimator } from "./pose-estimator.js";

/** What a model is evaluated on: images with the person boxes to estimate, and the annotations to score against. */
export interface EvaluationSet {
  /** Human-readable, e.g. "synthetic-demo/val". */
  readonly name: string;
  readonly images: readonly ValidationImage[];
  readonly groundTruths: readonly CocoKeypointGroundTruth[];
}

export interface EvaluateOptions {
  /** Average with the mirrored crop (TEST.FLIP_TEST). */
  readonly flipTest?: boolean;
  /** Keypoints scoring below this are left out of the instance score (TEST.IN_VIS_THRE); default 0.2. */
  readonly keypointScoreThreshold?: number;
  /** OKS-NMS per image (TEST.OKS_THRE, 0.9 in the references when boxes come from a detector); default none. */
  readonly oksNmsThreshold?: number;
  /** The model's per-keypoint OKS sigmas (its keypoint schema's); default COCO-17's. */
  readonly sigmas?: readonly number[];
  /** People per session run; default 32. */
  readonly batchSize?: number;
  /** Evaluate the first N images only; 0 or absent: all. */
  readonly maxImages?: number;
  /** Keeps the pictures decoded for the next evaluation of the same set (a training run's every epoch). */
  readonly frames?: DecodedFrameCache;
  readonly signal?: AbortSignal;
}

export interface ModelEvaluation {
  readonly dataset: string;
  readonly stats: CocoKeypointStats;
  readonly numImages: number;
  readonly numInstances: number;
  readonly flipTest: boolean;
  /** The keypoint detections that were scored (COCO results format). */
  readonly detections: readonly CocoKeypointMetricDetection[];
}

/**
 * COCO keypoint AP of a loaded model version on an evaluation set, through exactly the pipeline that serves
 * frames: the image file's bytes are decoded, cropped, run and decoded by PoseEstimator.infer, as a frame with
 * person boxes would be (with `frames`, pictures decoded by an earlier evaluation go in as raw RGB frames: the
 * same pixels). Images that fail to decode are an error, not a silent skip: a validation number must cover the
 * whole set.
 */
export async function evaluateModel(estimator: PoseEstimator, version: string, set: EvaluationSet, options: EvaluateOptions = {}): Promise<ModelEvaluation> {
  const flipTest = options.flipTest ?? false;
  const threshold = options.keypointScoreThreshold ?? 0.2;
  const batchSize = Math.max(1, options.batchSize ?? 32);
  const images = options.maxImages !== undefined && options.maxImages > 0 ? set.images.slice(0, options.maxImages) : set.images;
  const imageIds = new Set(images.map((image) => image.imageId));
  const metric = new CocoKeypointMetric(
    set.groundTruths.filter((gt) => imageIds.has(gt.image_id)),
    {
      images: [...imageIds],
      ...(options.oksNmsThreshold === undefined || options.oksNmsThreshold <= 0 ? {} : { oksNmsThreshold: options.oksNmsThreshold }),
      ...(options.sigmas === undefined ? {} : { sigmas: options.sigmas }),
    },
  );
  const detections: CocoKeypointMetricDetection[] = [];
  let batch: { image: ValidationImage; job: FrameJob }[] = [];
  let persons = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const outcomes = await estimator.infer(version, batch.map((b) => b.job));
    outcomes.forEach((outcome, i) => {
      const { image } = batch[i] as (typeof batch)[number];
      if (!outcome.ok) throw new AppError(Code.INVALID_ARGUMENT, `validation image ${image.imagePath}: ${outcome.message}`);
      // Each estimate carries the box it came from, in the order given; match them back for the box scores.
      for (const person of outcome.persons) {
        const box = image.boxes.find((b) => b.bbox.x === person.bbox.x && b.bbox.y === person.bbox.y && b.bbox.width === person.bbox.width && b.bbox.height === person.bbox.height);
        const boxScore = box?.score ?? 1;
        detections.push({
          image_id: image.imageId,
          category_id: 1,
          keypoints: Array.from(person.keypoints),
          score: person.score * boxScore,
          area: person.bbox.width * person.bbox.height,
        });
      }
    });
    batch = [];
    persons = 0;
  };
  for (const image of images) {
    options.signal?.throwIfAborted();
    if (image.boxes.length === 0) continue;
    if (persons + image.boxes.length > batchSize) await flush();
    const frame: FrameImage = options.frames === undefined ? { kind: "encoded", data: await readFile(image.imagePath) } : await options.frames.frame(image.imagePath);
    batch.push({
      image,
      job: { image: frame, boxes: image.boxes.map((b) => b.bbox), flipTest, minKeypointScore: threshold, maxPersons: 0 },
    });
    persons += image.boxes.length;
  }
  await flush();
  metric.addDetections(detections);
  const evaluation = metric.compute();
  return { dataset: set.name, stats: evaluation.stats, numImages: images.length, numInstances: evaluation.numGroundTruths, flipTest, detections };
}

/** The evaluation set of a COCO-layout split: its ground-truth boxes (TEST.USE_GT_BBOX) and its annotations. */
export function evaluationSetFromCoco(name: string, dataset: CocoKeypointDataset, boxes: readonly ValidationImage[] = dataset.groundTruthBoxes): EvaluationSet {
  return { name, images: boxes, groundTruths: dataset.file.annotations };
}
