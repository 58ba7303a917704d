import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { createKeypointCodec } from "@poseloop/pose";
import { createRgbImage, fillCapsule, fillCircle, type RgbImage } from "@poseloop/vision";
import type { FrameJob, FrameOutcome } from "./frame-job.js";
import { PoseEstimator } from "./pose-estimator.js";
import type { ServingSpec } from "./serving-spec.js";

// The checks a model version passes before it serves, shared by the inferencer (each load) and the trainer
// (an imported model, checked before anything is published).

/**
 * A deterministic picture of a person (head, torso, limbs) on a textured background, twice the model's input
 * size. A blank input can hide what real frames expose: a NaN that only appears on non-zero activations, or a
 * model that computes nothing on anything but zeros.
 */
export function warmUpImage(spec: Pick<ServingSpec, "inputWidth" | "inputHeight">): RgbImage {
  const width = spec.inputWidth * 2;
  const height = spec.inputHeight * 2;
  const image = createRgbImage(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 3 * (y * width + x);
      image.data[i] = (40 + ((x * 7 + y * 3) % 50)) & 0xff;
      image.data[i + 1] = (90 + Math.round(40 * Math.sin(x / 5) * Math.cos(y / 7))) & 0xff;
      image.data[i + 2] = (60 + ((x ^ y) % 40)) & 0xff;
    }
  }
  const u = width / 12;
  const v = height / 16;
  const skin = [230, 190, 160] as const;
  const shirt = [200, 40, 40] as const;
  const trousers = [30, 40, 150] as const;
  fillCircle(image, 6 * u, 2.5 * v, 1.2 * u, skin);
  fillCapsule(image, 6 * u, 4 * v, 6 * u, 9 * v, 1.6 * u, shirt);
  fillCapsule(image, 4.6 * u, 4.5 * v, 3 * u, 7 * v, 0.5 * u, shirt);
  fillCapsule(image, 3 * u, 7 * v, 2.5 * u, 9.5 * v, 0.45 * u, skin);
  fillCapsule(image, 7.4 * u, 4.5 * v, 9 * u, 6.5 * v, 0.5 * u, shirt);
  fillCapsule(image, 9 * u, 6.5 * v, 10 * u, 4.5 * v, 0.45 * u, skin);
  fillCapsule(image, 5.3 * u, 9.5 * v, 4.8 * u, 12.5 * v, 0.6 * u, trousers);
  fillCapsule(image, 4.8 * u, 12.5 * v, 4.6 * u, 15 * v, 0.55 * u, trousers);
  fillCapsule(image, 6.7 * u, 9.5 * v, 7.6 * u, 12.5 * v, 0.6 * u, trousers);
  fillCapsule(image, 7.6 * u, 12.5 * v, 8 * u, 15 * v, 0.55 * u, trousers);
  return image;
}

/** `batch` copies of the warm-up picture, each frame one person: one session run of `batch` crops. */
export function warmUpFrames(spec: Pick<ServingSpec, "inputWidth" | "inputHeight">, batch: number): FrameJob[] {
  const image = warmUpImage(spec);
  return Array.from({ length: batch }, () => ({
    image: { kind: "raw" as const, width: image.width, height: image.height, format: "RGB8" as const, stride: 3 * image.width, data: image.data },
    boxes: [],
    flipTest: false,
    minKeypointScore: 0,
    maxPersons: 0,
  }));
}

/**
 * What a client would have got from the warm-up batch, judged: every frame answered with one person whose
 * keypoints are finite. Every problem, in frame order (an import lists them all).
 */
export function warmUpProblems(batch: number, outcomes: readonly FrameOutcome[]): string[] {
  const problems: string[] = [];
  if (outcomes.length !== batch) problems.push(`${outcomes.length} results for ${batch} frames`);
  outcomes.forEach((outcome, i) => {
    if (!outcome.ok) problems.push(`frame ${i}: ${outcome.message}`);
    else if (outcome.persons.length !== 1) problems.push(`frame ${i}: ${outcome.persons.length} people for one crop`);
    else if (!(outcome.persons[0]?.keypoints ?? []).every(Number.isFinite)) problems.push(`frame ${i}: the model's outputs are not finite (NaN or infinite keypoints)`);
  });
  return problems;
}

/** The warm-up judged for a load: FAILED_PRECONDITION naming the first problem. */
export function checkWarmUp(version: string, batch: number, outcomes: readonly FrameOutcome[]): void {
  const [first] = warmUpProblems(batch, outcomes);
  if (first !== undefined) throw new AppError(Code.FAILED_PRECONDITION, `version ${version} failed its warm-up at batch ${batch} (the largest batch this inferencer sends): ${first}`);
}

/** An onnxruntime failure as a reason a client may read: no source paths of the runtime's build. */
export function modelFailureReason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*/g, "")
    .replace(/\S*\/[\w./+-]+:\d+\s*/g, "")
    .replace(/\S*::\S*\s*/g, "")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 300);
}

export interface LoadCheckOptions {
  /** Crops in the warm-up batch: the largest batch the model will be sent. */
  readonly batch: number;
  readonly intraOpThreads: number;
  readonly maxPixels: number;
}

/**
 * Every reason `bytes` cannot serve `spec`, all at once (empty when it serves): the file loads, the input and
 * every output the manifest names exist, a batch of `batch` crops gives each output the shape the manifest's
 * codec decodes, and the whole pipeline answers the warm-up frames with finite keypoints. It runs onnxruntime:
 * call it in a worker thread.
 */
export async function modelLoadProblems(spec: ServingSpec, bytes: Uint8Array, options: LoadCheckOptions): Promise<string[]> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", intraOpNumThreads: options.intraOpThreads, logSeverityLevel: 3 });
  } catch (error) {
    return [`the file is not a loadable ONNX model: ${modelFailureReason(error)}`];
  }
  const problems: string[] = [];
  try {
    const input = session.inputMetadata.find((m) => m.name === spec.inputName);
    if (input === undefined) problems.push(`the model has no input named ${spec.inputName} (its inputs: ${session.inputNames.join(", ")})`);
    else if (input.isTensor) {
      const expected = ["N", 3, spec.inputHeight, spec.inputWidth];
      const fixed = input.shape.length !== 4 || input.shape.slice(1).some((d, j) => typeof d === "number" && d !== expected[j + 1]);
      if (fixed) problems.push(`input ${spec.inputName} has shape [${input.shape.join(", ")}], the manifest describes [N, 3, ${spec.inputHeight}, ${spec.inputWidth}]`);
      if (input.type !== "float32") problems.push(`input ${spec.inputName} is ${input.type}, a pose model takes float32`);
    }
    const missing = spec.outputNames.filter((name) => !session.outputNames.includes(name));
    for (const name of missing) problems.push(`the model has no output named ${name} (its outputs: ${session.outputNames.join(", ")})`);
    if (problems.length > 0) return problems;
    const codec = createKeypointCodec(spec.codec);
    const batch = Math.max(1, options.batch);
    let outputs: ort.InferenceSession.ReturnType;
    try {
      outputs = await session.run({ [spec.inputName]: new ort.Tensor("float32", new Float32Array(batch * 3 * spec.inputWidth * spec.inputHeight), [batch, 3, spec.inputHeight, spec.inputWidth]) }, [...spec.outputNames]);
    } catch (error) {
      return [`a batch of ${batch} crops of ${spec.inputWidth}x${spec.inputHeight} fails: ${modelFailureReason(error)}`];
    }
    spec.outputNames.forEach((name, i) => {
      const dims = outputs[name]?.dims ?? [];
      const want = [batch, ...(codec.outputShape[i] ?? [])];
      if (dims.length !== want.length || dims.some((d, j) => d !== want[j])) {
        problems.push(`output ${name} has shape [${dims.join(", ")}] for ${batch} crops, the manifest's codec and keypoint schema expect [${want.join(", ")}]`);
      }
    });
  } finally {
    await session.release();
  }
  if (problems.length > 0) return problems;
  const estimator = new PoseEstimator({ intraOpThreads: options.intraOpThreads, maxPixels: options.maxPixels });
  try {
    await estimator.load(spec, bytes);
    const outcomes = await estimator.infer(spec.version, warmUpFrames(spec, options.batch));
    return warmUpProblems(options.batch, outcomes).map((problem) => `warm-up at batch ${options.batch}: ${problem}`);
  } catch (error) {
    return [`warm-up at batch ${options.batch}: ${error instanceof AppError ? error.message : modelFailureReason(error)}`];
  } finally {
    await estimator.close();
  }
}
