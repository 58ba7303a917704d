import * as ort from "onnxruntime-node";
import { DetectionBatchBuilder } from "@poseloop/data";
import { decodeDetections, detectorInput, type DetectorOutput } from "@poseloop/detect";
import { evaluateBoxes, type CocoBoxDetection, type CocoBoxGroundTruth, type CocoBoxStats } from "@poseloop/pose";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { CalibrationFeeds } from "@poseloop/quant";
import { StepEngine } from "@poseloop/train";
import type { DetectionSet } from "../datasets/prepare-data.js";
import { INPUT_NAME, type DetectorRunContract } from "../experiment/model-contract.js";

/** Pictures letterboxed and run at once. */
const BATCH_SIZE = 16;
/**
 * Boxes kept per picture for AP, scoring at least this: COCO's AP integrates precision over every recall, so the
 * serving threshold (DetectorSpec.score_threshold, 0.3) would cut the curve short; CenterNet evaluates its top
 * 100 peaks the same way.
 */
const AP_SCORE_THRESHOLD = 0.01;

/** A detector's box AP on a validation set, in the shape the pose evaluations report (see metricsMessage). */
export interface BoxEvaluation {
  readonly dataset: string;
  readonly stats: CocoBoxStats;
  readonly numImages: number;
  /** People that count (crowd regions left out). */
  readonly numInstances: number;
  readonly flipTest: false;
  /**
   * Of the people, the fraction a box at the serving thresholds (the spec's score and NMS IoU) covers at
   * IoU ≥ 0.5, each box matched once, best first: what a stream's person source finds.
   */
  readonly servingRecall50: number;
}

/**
 * COCO box AP of a detector on its run's validation set through the serving path: each picture letterboxed as
 * DetectorSpec says (the batch builder's validation mode, the same pixels detectorInput gives an inferencer),
 * the ONNX model run, its outputs decoded by @poseloop/detect, the boxes mapped back to picture pixels and
 * scored by pycocotools' bbox method. Runs in the training run's or the evaluation's worker thread.
 */
export class DetectorEvaluator {
  readonly validation: DetectionSet;
  readonly #contract: DetectorRunContract;
  readonly #builder: DetectionBatchBuilder;
  readonly #intraOpThreads: number;

  constructor(config: TrainConfig, contract: DetectorRunContract, validation: DetectionSet) {
    // TEST.MAX_IMAGES: the first pictures only (an evaluation's max_images).
    const maxImages = config.validation?.maxImages ?? 0;
    this.validation = maxImages > 0 && validation.images.length > maxImages ? { ...validation, images: validation.images.slice(0, maxImages) } : validation;
    this.#contract = contract;
    const { inputWidth: width, inputHeight: height, mean, std, detector } = contract;
    this.#builder = new DetectionBatchBuilder(this.validation.images, {
      inputSize: { width, height },
      stride: detector.strides[0] ?? 4,
      numClasses: Math.max(1, detector.numClasses),
      normalization: { mean, std, channelOrder: "RGB" },
      padValue: detector.padValue,
    });
    // As ModelEvaluator: evaluations run while the step sessions wait, with all the threads they train with.
    this.#intraOpThreads = config.intraOpThreads > 0 ? config.intraOpThreads * Math.max(1, config.replicas) : 0;
  }

  /** The box AP of an ONNX detector (fp32 or int8). */
  async evaluate(model: Uint8Array): Promise<BoxEvaluation> {
    const { inputWidth, inputHeight, detector } = this.#contract;
    const session = await ort.InferenceSession.create(model, { ...StepEngine.sessionOptions({ intraOpThreads: this.#intraOpThreads }), logSeverityLevel: 3 });
    const detections: CocoBoxDetection[] = [];
    const served: CocoBoxDetection[] = [];
    try {
      const images = this.validation.images;
      for (let start = 0, index = 0; start < images.length; start += BATCH_SIZE, index++) {
        const samples = Array.from({ length: Math.min(BATCH_SIZE, images.length - start) }, (_, i) => start + i);
        const batch = await this.#builder.build(0, index, samples);
        const out = await session.run({ [INPUT_NAME]: new ort.Tensor("float32", batch.images, [batch.size, 3, inputHeight, inputWidth]) });
        const outputs: Record<string, DetectorOutput> = {};
        for (const name of session.outputNames) {
          const tensor = out[name] as ort.Tensor;
          outputs[name] = { data: tensor.data as Float32Array, dims: tensor.dims };
        }
        const decode = { inputWidth, inputHeight };
        const ranked = decodeDetections(detector, outputs, { ...decode, scoreThreshold: AP_SCORE_THRESHOLD, maxDetections: 100 });
        const serving = decodeDetections(detector, outputs, decode);
        samples.forEach((sample, slot) => {
          const image = images[sample]!;
          const geometry = detectorInput(image.width, image.height, detector, inputWidth, inputHeight);
          const toCoco = (list: CocoBoxDetection[]) => (box: { x1: number; y1: number; x2: number; y2: number; score: number }) => {
            const b = geometry.toFrame(box);
            list.push({ image_id: image.imageId, bbox: [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], score: b.score });
          };
          (ranked[slot] ?? []).forEach(toCoco(detections));
          (serving[slot] ?? []).forEach(toCoco(served));
        });
      }
    } finally {
      await session.release();
    }
    const groundTruths = this.#groundTruths();
    const imageIds = this.validation.images.map((image) => image.imageId);
    const { stats } = evaluateBoxes(groundTruths, detections, imageIds);
    const people = groundTruths.filter((gt) => gt.iscrowd !== true).length;
    const servedAt50 = people === 0 ? 0 : evaluateBoxes(groundTruths, served, imageIds).stats.ar50;
    return { dataset: this.validation.name, stats, numImages: imageIds.length, numInstances: people, flipTest: false, servingRecall50: servedAt50 };
  }

  /** Validation pictures, letterboxed without augmentation, as int8 calibration batches. */
  async calibrationFeeds(samples: number): Promise<CalibrationFeeds> {
    const { inputWidth: w, inputHeight: h } = this.#contract;
    const feeds: Record<string, ort.Tensor>[] = [];
    const count = Math.min(samples, this.validation.images.length);
    for (let start = 0, index = 0; start < count; start += BATCH_SIZE, index++) {
      const batch = await this.#builder.build(0, index, Array.from({ length: Math.min(BATCH_SIZE, count - start) }, (_, i) => start + i));
      feeds.push({ [INPUT_NAME]: new ort.Tensor("float32", batch.images, [batch.size, 3, h, w]) });
    }
    return feeds;
  }

  async close(): Promise<void> {
    // Sessions live for one evaluation each; the decoded pictures go with the builder.
  }

  #groundTruths(): CocoBoxGroundTruth[] {
    let id = 0;
    return this.validation.images.flatMap((image) =>
      image.objects.map((object) => ({ id: ++id, image_id: image.imageId, bbox: object.bbox, area: object.area, iscrowd: object.iscrowd })),
    );
  }
}
