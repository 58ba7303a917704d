import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { checkDetectorOutputs, decodeDetections, detectorInput, type DetectorOutput } from "@poseloop/detect";
import type { FrameImage, StageTimings } from "@poseloop/estimator";
import { colourHistogram, decodeImage, fromRawPixels, warpToTensor, type RgbImage, type TensorNormalization } from "@poseloop/vision";
import type { DetectorServingSpec } from "./detector-spec.js";

/** One frame for the person detector. Thresholds left out take the detector manifest's defaults. */
export interface DetectionJob {
  readonly image: FrameImage;
  readonly scoreThreshold?: number;
  readonly iouThreshold?: number;
  /** The most people kept (the stream's max_persons); 0 or absent: the manifest's max_detections. */
  readonly maxDetections?: number;
  /** Also measure the frame's colour histogram (the pose stage then gets the frame decoded and does not). */
  readonly histogram?: boolean;
}

/** A person box in frame pixels, clipped to the frame, with the detector's score. */
export interface DetectedBox {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
  readonly score: number;
}

export type DetectionOutcome =
  | {
      readonly ok: true;
      readonly width: number;
      readonly height: number;
      /** Best first. */
      readonly boxes: readonly DetectedBox[];
      /** The decoded frame (RGB8), so the pose stage crops it without decoding the frame again. */
      readonly image: FrameImage & { readonly kind: "raw" };
      readonly timings: StageTimings;
      readonly histogram?: Float32Array;
    }
  | { readonly ok: false; readonly code: number; readonly message: string; readonly timings: StageTimings };

interface LoadedDetector {
  readonly spec: DetectorServingSpec;
  readonly session: ort.InferenceSession;
  readonly normalization: TensorNormalization;
}

const now = (): bigint => process.hrtime.bigint();
const micros = (from: bigint, to: bigint): number => Number((to - from) / 1000n);

/**
 * Person detector sessions by version and the detector stage of a batch of frames: decode, letterbox into one
 * batched input, one session run, decode the head's outputs into person boxes in frame pixels (NMS and the
 * thresholds per frame, since frames of several streams share a batch). Synchronous image work: a worker
 * thread's, never a service's event loop.
 */
export class PersonDetector {
  readonly #models = new Map<string, LoadedDetector>();
  readonly #options: { readonly intraOpThreads: number; readonly maxPixels: number };

  constructor(options: { readonly intraOpThreads: number; readonly maxPixels: number }) {
    this.#options = options;
  }

  /**
   * Creates the session of a version and proves its outputs are the layout its manifest's head names: first
   * the outputs the graph declares, then the outputs of a warm-up batch of `batch` frames decoded as serving
   * decodes them. Any mismatch is FAILED_PRECONDITION listing every problem; the session is released.
   */
  async load(spec: DetectorServingSpec, bytes: Uint8Array, batch: number): Promise<void> {
    if (this.#models.has(spec.version)) return;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", intraOpNumThreads: this.#options.intraOpThreads, logSeverityLevel: 3 });
    } catch (error) {
      throw new AppError(Code.FAILED_PRECONDITION, `detector version ${spec.version} is not a loadable ONNX model`, { cause: error });
    }
    const model = { spec, session, normalization: { mean: spec.mean, std: spec.std, channelOrder: spec.channelOrder } };
    try {
      if (!session.inputNames.includes(spec.inputName)) {
        throw new AppError(Code.FAILED_PRECONDITION, `detector version ${spec.version} has no input named ${spec.inputName} (it has ${session.inputNames.join(", ")})`);
      }
      // A shape the graph leaves undeclared (an empty list) is checked on the warm-up's real outputs instead.
      const declared = session.outputMetadata.map((output) => ({ name: output.name, dims: output.isTensor && output.shape.length > 0 ? output.shape : undefined }));
      const problems = checkDetectorOutputs(spec.detector, declared, spec.inputWidth, spec.inputHeight);
      if (problems.length > 0) throw detectorMismatch(spec.version, problems);
      const image = warmUpPicture(spec);
      let outcomes: DetectionOutcome[];
      try {
        outcomes = await this.#run(model, Array.from({ length: Math.max(1, batch) }, () => ({ image })));
      } catch (error) {
        // The decode's own check of the real output shapes: the same mismatch, found on the warm-up's outputs.
        if (error instanceof AppError && error.code === Code.FAILED_PRECONDITION && error.problems.length > 0) throw detectorMismatch(spec.version, error.problems);
        throw error;
      }
      const failed = outcomes.find((outcome) => !outcome.ok);
      if (failed !== undefined && !failed.ok) throw new AppError(Code.FAILED_PRECONDITION, `detector version ${spec.version} failed its warm-up at batch ${batch}: ${failed.message}`);
      this.#models.set(spec.version, model);
    } catch (error) {
      await session.release();
      if (error instanceof AppError) throw error;
      throw new AppError(Code.FAILED_PRECONDITION, `detector version ${spec.version} failed its warm-up at batch ${batch}: ${(error as Error).message}`, { cause: error });
    }
  }

  async release(version: string): Promise<void> {
    const model = this.#models.get(version);
    this.#models.delete(version);
    await model?.session.release();
  }

  /** Runs the frames of one batch on `version`; a frame that fails gets its own error outcome. */
  async detect(version: string, jobs: readonly DetectionJob[]): Promise<DetectionOutcome[]> {
    const model = this.#models.get(version);
    if (model === undefined) throw new AppError(Code.FAILED_PRECONDITION, `detector version ${version} is not loaded in this worker`);
    return this.#run(model, jobs);
  }

  async close(): Promise<void> {
    for (const version of [...this.#models.keys()]) await this.release(version);
  }

  async #run(model: LoadedDetector, jobs: readonly DetectionJob[]): Promise<DetectionOutcome[]> {
    const { spec, session } = model;
    const decodeStart = now();
    const decoded = await Promise.all(jobs.map((job) => this.#decode(job.image).then((image) => ({ image }), (error: unknown) => ({ error: AppError.from(error, Code.INVALID_ARGUMENT) }))));
    const decodeEnd = now();
    const decodeUs = jobs.length === 0 ? 0 : micros(decodeStart, decodeEnd) / jobs.length;

    const { inputWidth: width, inputHeight: height } = spec;
    const plane = 3 * width * height;
    const slots = decoded.flatMap((d, frame) => ("image" in d ? [frame] : []));
    const tensor = new Float32Array(slots.length * plane);
    const padding = normalizedPad(spec.detector.padValue, model.normalization);
    const geometries = slots.map((frame, slot) => {
      const image = (decoded[frame] as { image: RgbImage }).image;
      const geometry = detectorInput(image.width, image.height, spec.detector, width, height);
      warpToTensor(image, geometry.inverseAffine, width, height, model.normalization, tensor, slot * plane);
      fillPadding(tensor, slot * plane, width, height, geometry.contentWidth, geometry.contentHeight, padding);
      return geometry;
    });
    const preprocessEnd = now();
    const boxes = new Map<number, DetectedBox[]>();
    let inferenceEnd = preprocessEnd;
    if (slots.length > 0) {
      const results = await session.run({ [spec.inputName]: new ort.Tensor("float32", tensor, [slots.length, 3, height, width]) });
      inferenceEnd = now();
      slots.forEach((frame, slot) => {
        const job = jobs[frame] as DetectionJob;
        const people = decodeDetections(spec.detector, itemOf(results, slot), {
          inputWidth: width,
          inputHeight: height,
          ...(job.scoreThreshold === undefined ? {} : { scoreThreshold: job.scoreThreshold }),
          ...(job.iouThreshold === undefined ? {} : { iouThreshold: job.iouThreshold }),
          ...(job.maxDetections === undefined || job.maxDetections === 0 ? {} : { maxDetections: job.maxDetections }),
        })[0] ?? [];
        const geometry = geometries[slot] as ReturnType<typeof detectorInput>;
        boxes.set(frame, people.map(geometry.toFrame).filter((b) => b.x2 > b.x1 && b.y2 > b.y1).map((b) => ({ x: b.x1, y: b.y1, width: b.x2 - b.x1, height: b.y2 - b.y1, score: b.score })));
      });
    }
    const postprocessEnd = now();
    const share = 1 / Math.max(1, slots.length);
    return jobs.map((job, i) => {
      const timings = {
        decodeUs,
        preprocessUs: micros(decodeEnd, preprocessEnd) * share,
        inferenceUs: micros(preprocessEnd, inferenceEnd) * share,
        postprocessUs: micros(inferenceEnd, postprocessEnd) * share,
      };
      const d = decoded[i] as { image: RgbImage } | { error: AppError };
      if ("error" in d) return { ok: false as const, code: d.error.code, message: d.error.message, timings };
      const image = { kind: "raw" as const, width: d.image.width, height: d.image.height, format: "RGB8" as const, stride: 3 * d.image.width, data: d.image.data };
      return { ok: true as const, width: d.image.width, height: d.image.height, boxes: boxes.get(i) ?? [], image, timings, ...(job.histogram === true ? { histogram: colourHistogram(d.image) } : {}) };
    });
  }

  async #decode(image: FrameImage): Promise<RgbImage> {
    if (image.kind === "encoded") return decodeImage(image.data, { maxPixels: this.#options.maxPixels });
    return fromRawPixels({ width: image.width, height: image.height, format: image.format, stride: image.stride, data: image.data }, { maxPixels: this.#options.maxPixels });
  }
}

function detectorMismatch(version: string, problems: readonly string[]): AppError {
  return new AppError(Code.FAILED_PRECONDITION, `detector version ${version} does not match its manifest's head layout: ${problems.join("; ")}`, { problems });
}

/** Batch item `slot` of every output, as a batch of one (thresholds differ between the streams of a batch). */
function itemOf(results: ort.InferenceSession.OnnxValueMapType, slot: number): Record<string, DetectorOutput> {
  const item: Record<string, DetectorOutput> = {};
  for (const [name, tensor] of Object.entries(results)) {
    const dims = tensor.dims;
    const size = dims.slice(1).reduce((a, b) => a * b, 1);
    const data = tensor.data as DetectorOutput["data"];
    item[name] = { data: data.subarray(slot * size, (slot + 1) * size), dims: [1, ...dims.slice(1)] };
  }
  return item;
}

/** The padding value after normalization, per tensor plane. */
function normalizedPad(padValue: number, normalization: TensorNormalization): [number, number, number] {
  const { mean, std } = normalization;
  const rgb = [0, 1, 2].map((c) => (padValue - (mean[c] as number)) / (std[c] as number));
  return normalization.channelOrder === "BGR" ? [rgb[2] as number, rgb[1] as number, rgb[0] as number] : [rgb[0] as number, rgb[1] as number, rgb[2] as number];
}

/** The letterbox's right and bottom padding: the warp left them at the normalized 0, the detector expects pad_value. */
function fillPadding(out: Float32Array, offset: number, width: number, height: number, contentWidth: number, contentHeight: number, pad: readonly number[]): void {
  const plane = width * height;
  for (let c = 0; c < 3; c++) {
    const value = pad[c] as number;
    const base = offset + c * plane;
    for (let y = 0; y < height; y++) {
      const row = base + y * width;
      if (y >= contentHeight) out.fill(value, row, row + width);
      else if (contentWidth < width) out.fill(value, row + contentWidth, row + width);
    }
  }
}

/** A busy, deterministic picture at the detector's input size (as the pose warm-up's): blank inputs hide NaNs. */
function warmUpPicture(spec: DetectorServingSpec): FrameImage {
  const { inputWidth: width, inputHeight: height } = spec;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 7) * 11) & 0xff;
  return { kind: "raw", width, height, format: "RGB8", stride: 3 * width, data };
}
