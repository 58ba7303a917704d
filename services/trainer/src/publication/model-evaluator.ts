import { create } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import { PoseDataLoader } from "@poseloop/data";
import { DecodedFrameCache, evaluateModel, PoseEstimator, type EvaluationSet, type ModelEvaluation, type ServingSpec } from "@poseloop/estimator";
import { KeypointMetricsSchema, type KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { CalibrationFeeds } from "@poseloop/quant";
import { INPUT_NAME, type PoseRunContract } from "../experiment/model-contract.js";
import type { KeypointSchema } from "@poseloop/pose";

/** Largest validation picture decoded (width·height). */
const MAX_FRAME_PIXELS = 64 * 1024 * 1024;
/**
 * Decoded validation pictures kept between evaluations. The synthetic demo's 200 need 29 MB and its validation
 * no longer decodes JPEGs after the first epoch (with the replicas' threads: 1.3-1.5 s an epoch before,
 * 0.7-0.9 s after); a COCO val2017 (5000 pictures, ~4.6 GB decoded) keeps its first ~270 and decodes the rest
 * each time.
 */
const VALIDATION_FRAME_CACHE_BYTES = 256 * 1024 * 1024;

/**
 * A pose model's keypoint evaluation or a detector's box evaluation (KeypointMetrics doubles as box metrics) as
 * the metrics message.
 */
export function metricsMessage(evaluation: Pick<ModelEvaluation, "dataset" | "numImages" | "numInstances" | "flipTest"> & Pick<ModelEvaluation, "stats">): KeypointMetrics {
  const s = evaluation.stats;
  return create(KeypointMetricsSchema, {
    ap: s.ap,
    ap50: s.ap50,
    ap75: s.ap75,
    apMedium: s.apMedium,
    apLarge: s.apLarge,
    ar: s.ar,
    ar50: s.ar50,
    ar75: s.ar75,
    arMedium: s.arMedium,
    arLarge: s.arLarge,
    dataset: evaluation.dataset,
    numImages: evaluation.numImages,
    numInstances: evaluation.numInstances,
    flipTest: evaluation.flipTest,
  });
}

/**
 * COCO AP of a model on a run's validation set through the serving pipeline (crops → session → decode), so
 * that a training run's validation and a publication's AP gate measure alike. Runs in a worker thread.
 */
export class ModelEvaluator {
  readonly validation: EvaluationSet;
  readonly #config: TrainConfig;
  readonly #contract: PoseRunContract;
  readonly #estimator: PoseEstimator;
  /** Validation pictures decoded once for all the evaluations (every epoch's, the gate's attempts). */
  readonly #frames: DecodedFrameCache;

  constructor(config: TrainConfig, contract: PoseRunContract, validation: EvaluationSet) {
    this.#config = config;
    this.#contract = contract;
    this.validation = validation;
    // Evaluations run while the training step sessions wait: they get all the threads the replicas train with
    // (0: onnxruntime's default, one per core, as for training).
    this.#estimator = new PoseEstimator({ intraOpThreads: config.intraOpThreads > 0 ? config.intraOpThreads * Math.max(1, config.replicas) : 0, maxPixels: MAX_FRAME_PIXELS });
    this.#frames = new DecodedFrameCache({ maxBytes: VALIDATION_FRAME_CACHE_BYTES, maxPixels: MAX_FRAME_PIXELS });
  }

  /** The AP of an ONNX model (fp32 or int8); `version` names it in the results. */
  async evaluate(model: Uint8Array, version: string): Promise<ModelEvaluation> {
    const spec = { ...this.#contract.spec, version };
    await this.#estimator.load(spec, model);
    try {
      const validation = this.#config.validation;
      return await evaluateModel(this.#estimator, version, this.validation, {
        flipTest: validation?.flipTest ?? false,
        // The run's own schema's sigmas: OKS with COCO-17's would score another schema's keypoints wrongly.
        ...(this.#contract.schema.sigmas.length > 0 ? { sigmas: this.#contract.schema.sigmas } : {}),
        ...(validation !== undefined && validation.keypointScoreThreshold > 0 ? { keypointScoreThreshold: validation.keypointScoreThreshold } : {}),
        ...(validation !== undefined && validation.oksThreshold > 0 && !validation.useGtBoxes ? { oksNmsThreshold: validation.oksThreshold } : {}),
        ...(validation !== undefined && validation.maxImages > 0 ? { maxImages: validation.maxImages } : {}),
        frames: this.#frames,
      });
    } finally {
      await this.#estimator.release(version);
    }
  }

  /** Validation crops (no augmentation) as int8 calibration batches. */
  async calibrationFeeds(samples: number): Promise<CalibrationFeeds> {
    const { spec, schema } = this.#contract;
    return poseCalibrationFeeds(spec, schema, this.validation.images, samples, INPUT_NAME);
  }

  async close(): Promise<void> {
    await this.#estimator.close();
  }
}

/**
 * The first `samples` people of a set, cropped by their labelled boxes without augmentation, as int8 calibration
 * batches fed to `inputName`.
 */
export async function poseCalibrationFeeds(
  spec: ServingSpec,
  schema: KeypointSchema,
  images: EvaluationSet["images"],
  samples: number,
  inputName: string,
): Promise<Record<string, ort.Tensor>[]> {
  const { inputWidth: w, inputHeight: h } = spec;
  const loader = await PoseDataLoader.create({
    source: { boxes: images },
    inputSize: { width: w, height: h },
    codec: spec.codec,
    batchSize: Math.min(16, samples),
    mode: "validation",
    schema,
    normalization: { mean: spec.mean, std: spec.std, channelOrder: spec.channelOrder },
    workers: 0,
  });
  const feeds: Record<string, ort.Tensor>[] = [];
  try {
    let taken = 0;
    for await (const batch of loader.epoch(0)) {
      feeds.push({ [inputName]: new ort.Tensor("float32", batch.images, [batch.size, 3, h, w]) });
      taken += batch.size;
      if (taken >= samples) break;
    }
  } finally {
    await loader.close();
  }
  return feeds;
}
