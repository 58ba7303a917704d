import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { createKeypointCodec, decodeToFrame, flipPermutation, instanceScore, type Box, type KeypointCodec } from "@poseloop/pose";
import { colourHistogram, cropPerson, decodeImage, fromRawPixels, type RgbImage, type TensorNormalization } from "@poseloop/vision";
import type { FrameImage, FrameJob, FrameOutcome, PersonEstimate } from "./frame-job.js";
import type { ServingSpec } from "./serving-spec.js";

interface LoadedModel {
  readonly spec: ServingSpec;
  readonly session: ort.InferenceSession;
  readonly codec: KeypointCodec;
  readonly normalization: TensorNormalization;
  readonly flip: Int32Array;
}

export interface PoseEstimatorOptions {
  readonly intraOpThreads: number;
  /** Largest decoded frame, in pixels. */
  readonly maxPixels: number;
}

const now = (): bigint => process.hrtime.bigint();
const micros = (from: bigint, to: bigint): number => Number((to - from) / 1000n);

/**
 * onnxruntime sessions by model version and the whole top-down pipeline for a batch of frames: decode, person
 * crops, one batched session run, decoding back to frame coordinates. The inferencer serves with it and the
 * trainer validates with it, so served keypoints and evaluated keypoints come from one code path. It decodes
 * images synchronously: use it in a worker thread (the inferencer's pool, the trainer's runner), never on a
 * service's event loop.
 */
export class PoseEstimator {
  readonly #models = new Map<string, LoadedModel>();
  readonly #options: PoseEstimatorOptions;

  constructor(options: PoseEstimatorOptions) {
    this.#options = options;
  }

  /**
   * Creates the session of a version and proves it serves: the inputs and outputs the manifest names exist, and
   * a warm-up batch gives outputs of the codec's shape. Any mismatch is FAILED_PRECONDITION with the reason.
   */
  async load(spec: ServingSpec, bytes: Uint8Array): Promise<void> {
    if (this.#models.has(spec.version)) return;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", intraOpNumThreads: this.#options.intraOpThreads, logSeverityLevel: 3 });
    } catch (error) {
      throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version} is not a loadable ONNX model`, { cause: error });
    }
    try {
      if (!session.inputNames.includes(spec.inputName)) throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version} has no input named ${spec.inputName} (it has ${session.inputNames.join(", ")})`);
      for (const name of spec.outputNames) {
        if (!session.outputNames.includes(name)) throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version} has no output named ${name} (it has ${session.outputNames.join(", ")})`);
      }
      const codec = createKeypointCodec(spec.codec);
      const warmup = await session.run({ [spec.inputName]: new ort.Tensor("float32", new Float32Array(3 * spec.inputWidth * spec.inputHeight), [1, 3, spec.inputHeight, spec.inputWidth]) }, [...spec.outputNames]);
      spec.outputNames.forEach((name, i) => {
        const dims = warmup[name]?.dims ?? [];
        const expected = [1, ...(codec.outputShape[i] ?? [])];
        if (dims.length !== expected.length || dims.some((d, j) => d !== expected[j])) {
          throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version}: output ${name} has shape [${dims.join(", ")}], the manifest's codec expects [${expected.join(", ")}]`);
        }
      });
      const flip = flipPermutation({ name: "served", names: Array.from({ length: spec.numKeypoints }, (_, i) => String(i)), flipPairs: spec.flipPairs, sigmas: [], skeleton: [] });
      this.#models.set(spec.version, { spec, session, codec, normalization: { mean: spec.mean, std: spec.std, channelOrder: spec.channelOrder }, flip });
    } catch (error) {
      await session.release();
      if (error instanceof AppError) throw error;
      throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version} does not serve its manifest: ${(error as Error).message}`, { cause: error });
    }
  }

  async release(version: string): Promise<void> {
    const model = this.#models.get(version);
    this.#models.delete(version);
    await model?.session.release();
  }

  get versions(): string[] {
    return [...this.#models.keys()];
  }

  /** Runs the frames of one batch on `version`; a frame that fails gets its own error outcome. */
  async infer(version: string, frames: readonly FrameJob[]): Promise<FrameOutcome[]> {
    const model = this.#models.get(version);
    if (model === undefined) throw new AppError(Code.FAILED_PRECONDITION, `version ${version} is not loaded in this worker`);
    const { spec } = model;
    const decodeStart = now();
    const decoded = await Promise.all(frames.map((frame) => this.#decode(frame.image).then((image) => ({ image }), (error: unknown) => ({ error: AppError.from(error, Code.INVALID_ARGUMENT) }))));
    const decodeEnd = now();
    const decodeUs = frames.length === 0 ? 0 : micros(decodeStart, decodeEnd) / frames.length;

    // Crops of every person of every decodable frame, in one batch (mirrored copies after them for the flip test).
    const plans: { frame: number; box: Box; cropToFrame: [number, number, number, number, number, number] }[] = [];
    const failures = new Map<number, AppError>();
    decoded.forEach((d, i) => {
      if ("error" in d) {
        failures.set(i, d.error);
        return;
      }
      const boxes = frames[i]?.boxes.length === 0 ? [{ x: 0, y: 0, width: d.image.width, height: d.image.height }] : (frames[i]?.boxes ?? []);
      for (const box of boxes) plans.push({ frame: i, box, cropToFrame: [1, 0, 0, 0, 1, 0] });
    });
    const flips = frames.some((f) => f.flipTest);
    const count = plans.length;
    const plane = 3 * spec.inputWidth * spec.inputHeight;
    const tensor = new Float32Array((flips ? 2 : 1) * count * plane);
    const cropSpec = { inputWidth: spec.inputWidth, inputHeight: spec.inputHeight, normalization: model.normalization, udp: model.codec.udp };
    const preprocessStart = now();
    plans.forEach((plan, slot) => {
      const d = decoded[plan.frame] as { image: RgbImage };
      try {
        const crop = cropPerson(d.image, plan.box, cropSpec, tensor, slot * plane);
        plan.cropToFrame = crop.cropToFrame as [number, number, number, number, number, number];
        if (flips) cropPerson(d.image, plan.box, cropSpec, tensor, (count + slot) * plane, true);
      } catch (error) {
        failures.set(plan.frame, AppError.from(error, Code.INVALID_ARGUMENT));
      }
    });
    const preprocessEnd = now();
    let outputs: Float32Array[] = [];
    if (count > 0) {
      const result = await model.session.run({ [spec.inputName]: new ort.Tensor("float32", tensor, [(flips ? 2 : 1) * count, 3, spec.inputHeight, spec.inputWidth]) }, [...spec.outputNames]);
      outputs = spec.outputNames.map((name) => result[name]?.data as Float32Array);
    }
    const inferenceEnd = now();
    const persons = new Map<number, PersonEstimate[]>();
    plans.forEach((plan, slot) => {
      if (failures.has(plan.frame)) return;
      const frame = frames[plan.frame] as FrameJob;
      let instance: readonly Float32Array[] = outputs;
      let index = slot;
      if (frame.flipTest) {
        // mergeFlipTest reads instance `slot` of both arrays: point the flipped one at its mirrored slot.
        instance = model.codec.mergeFlipTest(outputs, shiftedView(outputs, count, model.codec), model.flip, slot);
        index = 0;
      }
      const keypoints = decodeToFrame(model.codec, instance, index, plan.cropToFrame);
      const scores = Float32Array.from({ length: spec.numKeypoints }, (_, k) => keypoints[3 * k + 2] as number);
      const list = persons.get(plan.frame) ?? [];
      list.push({ bbox: plan.box, score: instanceScore(scores, 1, frame.minKeypointScore), keypoints });
      persons.set(plan.frame, list);
    });
    const postprocessEnd = now();
    const share = count === 0 ? 0 : 1 / Math.max(1, frames.length);
    return frames.map((frame, i) => {
      const timings = {
        decodeUs,
        preprocessUs: micros(preprocessStart, preprocessEnd) * share,
        inferenceUs: micros(preprocessEnd, inferenceEnd) * share,
        postprocessUs: micros(inferenceEnd, postprocessEnd) * share,
      };
      const failure = failures.get(i);
      if (failure !== undefined) return { ok: false as const, code: failure.code, message: failure.message, timings };
      const d = decoded[i] as { image: RgbImage };
      let list = [...(persons.get(i) ?? [])].sort((a, b) => b.score - a.score);
      if (frame.maxPersons > 0) list = list.slice(0, frame.maxPersons);
      return { ok: true as const, width: d.image.width, height: d.image.height, persons: list, timings, ...(frame.histogram === true ? { histogram: colourHistogram(d.image) } : {}) };
    });
  }

  async close(): Promise<void> {
    for (const version of [...this.#models.keys()]) await this.release(version);
  }

  async #decode(image: FrameImage): Promise<RgbImage> {
    if (image.kind === "encoded") return decodeImage(image.data, { maxPixels: this.#options.maxPixels });
    return fromRawPixels({ width: image.width, height: image.height, format: image.format, stride: image.stride, data: image.data }, { maxPixels: this.#options.maxPixels });
  }
}

/** A view of the outputs starting at instance `offset` (the mirrored half of a flip-test batch). */
function shiftedView(outputs: readonly Float32Array[], offset: number, codec: KeypointCodec): Float32Array[] {
  return outputs.map((output, i) => {
    const size = (codec.outputShape[i] ?? []).reduce((a, b) => a * b, 1);
    return output.subarray(offset * size);
  });
}
