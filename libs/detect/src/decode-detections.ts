import { DetectorHead, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { AppError, Code } from "@poseloop/core";
import { checkDetectorOutputs, detectorOutputNames, detectorStrides } from "./detector-layout.js";
import { nonMaximumSuppression, type PersonDetection } from "./person-detection.js";

/** One output tensor of a detector run: row-major data and its dims. */
export interface DetectorOutput {
  readonly data: Float32Array | BigInt64Array | Int32Array;
  readonly dims: readonly number[];
}

export interface DecodeOptions {
  /** The detector input's size in pixels (the boxes' coordinate frame). */
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** Boxes scoring below this are dropped; default: the spec's score_threshold, or 0.3 when it is 0. */
  readonly scoreThreshold?: number;
  /** NMS drops a box overlapping a better one by more than this; default: the spec's, or 0.5 when it is 0. */
  readonly iouThreshold?: number;
  /** The most boxes kept per batch item; default: the spec's max_detections, or 100 when it is 0. */
  readonly maxDetections?: number;
}

export const DEFAULT_SCORE_THRESHOLD = 0.3;
export const DEFAULT_IOU_THRESHOLD = 0.5;
export const DEFAULT_MAX_DETECTIONS = 100;

/** The thresholds a decode uses: the options', else the spec's non-zero defaults, else the library's. */
export function resolveThresholds(
  spec: Pick<DetectorSpec, "scoreThreshold" | "iouThreshold" | "maxDetections">,
  options: Pick<DecodeOptions, "scoreThreshold" | "iouThreshold" | "maxDetections"> = {},
): { scoreThreshold: number; iouThreshold: number; maxDetections: number } {
  return {
    scoreThreshold: options.scoreThreshold ?? (spec.scoreThreshold > 0 ? spec.scoreThreshold : DEFAULT_SCORE_THRESHOLD),
    iouThreshold: options.iouThreshold ?? (spec.iouThreshold > 0 ? spec.iouThreshold : DEFAULT_IOU_THRESHOLD),
    maxDetections: options.maxDetections ?? (spec.maxDetections > 0 ? spec.maxDetections : DEFAULT_MAX_DETECTIONS),
  };
}

/**
 * A detector's outputs → the person boxes of each batch item, in INPUT pixels (map them to the frame with
 * `detectorInput(...).toFrame`): the head's layout decoded, the person class kept, boxes under the score
 * threshold dropped, greedy NMS, at most maxDetections, best first. Outputs that do not match the spec's head
 * layout → FAILED_PRECONDITION listing every mismatch.
 */
export function decodeDetections(
  spec: DetectorSpec,
  outputs: Readonly<Record<string, DetectorOutput>>,
  options: DecodeOptions,
): PersonDetection[][] {
  const { inputWidth, inputHeight } = options;
  const { scoreThreshold, iouThreshold, maxDetections } = resolveThresholds(spec, options);
  const optionProblems: string[] = [];
  if (!(Number.isInteger(inputWidth) && inputWidth > 0 && Number.isInteger(inputHeight) && inputHeight > 0)) {
    optionProblems.push(`input size must be positive integers, got ${String(inputWidth)}x${String(inputHeight)}`);
  }
  if (!(scoreThreshold >= 0 && scoreThreshold <= 1)) optionProblems.push(`score threshold must be in [0, 1], got ${scoreThreshold}`);
  if (!(iouThreshold > 0 && iouThreshold <= 1)) optionProblems.push(`IoU threshold must be in (0, 1], got ${iouThreshold}`);
  if (!(Number.isInteger(maxDetections) && maxDetections > 0)) optionProblems.push(`max detections must be a positive integer, got ${maxDetections}`);
  if (optionProblems.length > 0) throw AppError.invalid("detection decode options", optionProblems);

  const entries = Object.entries(outputs);
  const problems = checkDetectorOutputs(spec, entries.map(([name, tensor]) => ({ name, dims: tensor.dims })), inputWidth, inputHeight);
  for (const [name, tensor] of entries) {
    const count = tensor.dims.reduce((product, dim) => product * dim, 1);
    if (count !== tensor.data.length) problems.push(`output "${name}" has ${tensor.data.length} values for dims [${tensor.dims.join(", ")}]`);
  }
  const names = detectorOutputNames(spec);
  const tensors = names.map((name) => outputs[name] ?? (spec.head === DetectorHead.YOLOX && entries.length === 1 ? entries[0]?.[1] : undefined));
  const batches = new Set(tensors.flatMap((tensor) => (tensor === undefined ? [] : [tensor.dims[0]])));
  if (batches.size > 1) problems.push(`the outputs disagree on the batch size: ${[...batches].join(", ")}`);
  if (problems.length > 0) {
    throw new AppError(Code.FAILED_PRECONDITION, `detector outputs do not match the manifest: ${problems.join("; ")}`, { problems });
  }

  const threshold = { scoreThreshold, inputWidth, inputHeight };
  let candidates: PersonDetection[][];
  switch (spec.head) {
    case DetectorHead.CENTERNET:
      candidates = decodeCenterNet(spec, tensors as DetectorOutput[], detectorStrides(spec)[0] as number, threshold);
      break;
    case DetectorHead.YOLOX:
      candidates = decodeYolox(spec, tensors[0] as DetectorOutput, threshold);
      break;
    case DetectorHead.RTMDET:
      candidates = decodeRtmdet(spec, tensors as DetectorOutput[], threshold);
      break;
    default:
      candidates = decodeBoxesScores(spec, tensors as DetectorOutput[], threshold);
      break;
  }
  return candidates.map((boxes) => nonMaximumSuppression(boxes, iouThreshold, maxDetections));
}

interface Threshold {
  readonly scoreThreshold: number;
  readonly inputWidth: number;
  readonly inputHeight: number;
}

function value(data: DetectorOutput["data"], index: number): number {
  return Number(data[index]);
}

/** Kept when it scores enough and is a real box; NaN anywhere fails both tests. */
function accept(out: PersonDetection[], x1: number, y1: number, x2: number, y2: number, score: number, threshold: Threshold): void {
  if (!(score >= threshold.scoreThreshold) || !(x2 > x1 && y2 > y1)) return;
  if (!(Number.isFinite(x1) && Number.isFinite(y1) && Number.isFinite(x2) && Number.isFinite(y2) && score <= 1.0001)) return;
  out.push({ x1, y1, x2, y2, score });
}

/**
 * PoseLoop's CenterNet head: a person is a 3x3 local maximum of the person channel of "centers" (ties count, as
 * CenterNet's max-pool equality does); its centre is (column + offset_x, row + offset_y) · stride and its size
 * (size_w, size_h) · stride, in input pixels. The training target puts an object whose centre is at (cx, cy)
 * pixels in cell (⌊cx/stride⌋, ⌊cy/stride⌋) with offset (cx/stride − column, cy/stride − row).
 */
function decodeCenterNet(spec: DetectorSpec, [centers, sizes, offsets]: DetectorOutput[], stride: number, threshold: Threshold): PersonDetection[][] {
  const [batch = 0, classes = 0, height = 0, width = 0] = (centers as DetectorOutput).dims;
  const plane = width * height;
  const result: PersonDetection[][] = [];
  for (let n = 0; n < batch; n++) {
    const boxes: PersonDetection[] = [];
    const base = (n * classes + spec.personClass) * plane;
    const heat = (centers as DetectorOutput).data;
    const regression = n * 2 * plane;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const score = value(heat, base + y * width + x);
        if (!(score >= threshold.scoreThreshold) || !isLocalMaximum(heat, base, width, height, x, y, score)) continue;
        const cell = y * width + x;
        const cx = (x + value((offsets as DetectorOutput).data, regression + cell)) * stride;
        const cy = (y + value((offsets as DetectorOutput).data, regression + plane + cell)) * stride;
        const w = value((sizes as DetectorOutput).data, regression + cell) * stride;
        const h = value((sizes as DetectorOutput).data, regression + plane + cell) * stride;
        accept(boxes, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, threshold);
      }
    }
    result.push(boxes);
  }
  return result;
}

function isLocalMaximum(heat: DetectorOutput["data"], base: number, width: number, height: number, x: number, y: number, score: number): boolean {
  for (let dy = -1; dy <= 1; dy++) {
    const yy = y + dy;
    if (yy < 0 || yy >= height) continue;
    for (let dx = -1; dx <= 1; dx++) {
      const xx = x + dx;
      if (xx < 0 || xx >= width || (dx === 0 && dy === 0)) continue;
      if (value(heat, base + yy * width + xx) > score) return false;
    }
  }
  return true;
}

/** YOLOX without NMS: [N, A, 5 + C] rows of cx, cy, w, h, objectness, class scores; score = objectness · person score. */
function decodeYolox(spec: DetectorSpec, output: DetectorOutput, threshold: Threshold): PersonDetection[][] {
  const [batch = 0, anchors = 0, row = 0] = output.dims;
  const result: PersonDetection[][] = [];
  for (let n = 0; n < batch; n++) {
    const boxes: PersonDetection[] = [];
    for (let a = 0; a < anchors; a++) {
      const offset = (n * anchors + a) * row;
      const score = value(output.data, offset + 4) * value(output.data, offset + 5 + spec.personClass);
      if (!(score >= threshold.scoreThreshold)) continue;
      const cx = value(output.data, offset);
      const cy = value(output.data, offset + 1);
      const w = value(output.data, offset + 2);
      const h = value(output.data, offset + 3);
      accept(boxes, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, threshold);
    }
    result.push(boxes);
  }
  return result;
}

/** RTMDet with MMDeploy's NMS: "dets" [N, K, 5] and "labels" [N, K]; padding rows score 0 or carry label −1. */
function decodeRtmdet(spec: DetectorSpec, [dets, labels]: DetectorOutput[], threshold: Threshold): PersonDetection[][] {
  const [batch = 0, count = 0] = (dets as DetectorOutput).dims;
  const result: PersonDetection[][] = [];
  for (let n = 0; n < batch; n++) {
    const boxes: PersonDetection[] = [];
    for (let k = 0; k < count; k++) {
      if (value((labels as DetectorOutput).data, n * count + k) !== spec.personClass) continue;
      const offset = (n * count + k) * 5;
      const data = (dets as DetectorOutput).data;
      accept(boxes, value(data, offset), value(data, offset + 1), value(data, offset + 2), value(data, offset + 3), value(data, offset + 4), threshold);
    }
    result.push(boxes);
  }
  return result;
}

/** "boxes" [N, K, 4] x1 y1 x2 y2 and "scores" [N, K, C] (or [N, K] for one class). */
function decodeBoxesScores(spec: DetectorSpec, [boxesOut, scoresOut]: DetectorOutput[], threshold: Threshold): PersonDetection[][] {
  const [batch = 0, count = 0] = (boxesOut as DetectorOutput).dims;
  const classes = (scoresOut as DetectorOutput).dims.length === 2 ? 1 : spec.numClasses;
  const personClass = classes === 1 ? 0 : spec.personClass;
  const result: PersonDetection[][] = [];
  for (let n = 0; n < batch; n++) {
    const boxes: PersonDetection[] = [];
    for (let k = 0; k < count; k++) {
      const score = value((scoresOut as DetectorOutput).data, (n * count + k) * classes + personClass);
      const offset = (n * count + k) * 4;
      const data = (boxesOut as DetectorOutput).data;
      accept(boxes, value(data, offset), value(data, offset + 1), value(data, offset + 2), value(data, offset + 3), score, threshold);
    }
    result.push(boxes);
  }
  return result;
}
