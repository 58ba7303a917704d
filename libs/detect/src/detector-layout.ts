import { DetectorHead, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";

/** A tensor's shape as a model declares it: numbers, or names / null for dimensions fixed only at run time. */
export type DeclaredDims = readonly (number | string | null | undefined)[];

/** The output names of each head in the order DetectorSpec.output_names lists them (the proto's layouts). */
export const DEFAULT_OUTPUT_NAMES: Readonly<Record<DetectorHead, readonly string[]>> = Object.freeze({
  [DetectorHead.UNSPECIFIED]: [],
  [DetectorHead.CENTERNET]: ["centers", "sizes", "offsets"],
  // MMDeploy names YOLOX's single raw output "output"; a model with one output is read whatever its name.
  [DetectorHead.YOLOX]: ["output"],
  [DetectorHead.RTMDET]: ["dets", "labels"],
  [DetectorHead.BOXES_SCORES]: ["boxes", "scores"],
});

/** The strides a head uses when the spec lists none: the zoo's CenterNet head (4) and YOLOX's pyramid. */
const DEFAULT_STRIDES: Readonly<Partial<Record<DetectorHead, readonly number[]>>> = {
  [DetectorHead.CENTERNET]: [4],
  [DetectorHead.YOLOX]: [8, 16, 32],
};

export const HEAD_NAMES: Readonly<Record<DetectorHead, string>> = Object.freeze({
  [DetectorHead.UNSPECIFIED]: "UNSPECIFIED",
  [DetectorHead.CENTERNET]: "CENTERNET",
  [DetectorHead.YOLOX]: "YOLOX",
  [DetectorHead.RTMDET]: "RTMDET",
  [DetectorHead.BOXES_SCORES]: "BOXES_SCORES",
});

/** The names of the head's outputs, in layout order: the spec's output_names, or the layout's own names. */
export function detectorOutputNames(spec: Pick<DetectorSpec, "head" | "outputNames">): readonly string[] {
  return spec.outputNames.length > 0 ? spec.outputNames : (DEFAULT_OUTPUT_NAMES[spec.head] ?? []);
}

/** The spec's strides, or the head's defaults when it lists none. */
export function detectorStrides(spec: Pick<DetectorSpec, "head" | "strides">): readonly number[] {
  return spec.strides.length > 0 ? spec.strides : (DEFAULT_STRIDES[spec.head] ?? []);
}

/** Every problem with a DetectorSpec on its own (before looking at a model); empty when it is usable. */
export function checkDetectorSpec(spec: DetectorSpec): string[] {
  const problems: string[] = [];
  const head = HEAD_NAMES[spec.head] as string | undefined;
  if (head === undefined || spec.head === DetectorHead.UNSPECIFIED) {
    problems.push(`detector.head must be one of CENTERNET, YOLOX, RTMDET, BOXES_SCORES, got ${String(spec.head)}`);
  }
  if (spec.numClasses < 1) problems.push("detector.num_classes must be at least 1");
  else if (spec.personClass >= spec.numClasses) {
    problems.push(`detector.person_class ${spec.personClass} must be below num_classes ${spec.numClasses}`);
  }
  if (spec.strides.some((stride) => !(Number.isInteger(stride) && stride > 0))) problems.push("detector.strides must be positive integers");
  if ((spec.head === DetectorHead.CENTERNET || spec.head === DetectorHead.YOLOX) && detectorStrides(spec).length === 0) {
    problems.push(`detector.strides must not be empty for a ${head ?? "?"} head`);
  }
  const expected = DEFAULT_OUTPUT_NAMES[spec.head] as readonly string[] | undefined;
  if (expected !== undefined && spec.outputNames.length > 0 && spec.outputNames.length !== expected.length) {
    problems.push(`detector.output_names must list ${expected.length} names (${expected.join(", ")}), got ${spec.outputNames.length}`);
  }
  if (!(spec.scoreThreshold >= 0 && spec.scoreThreshold <= 1)) problems.push(`detector.score_threshold must be in [0, 1], got ${spec.scoreThreshold}`);
  if (!(spec.iouThreshold >= 0 && spec.iouThreshold <= 1)) problems.push(`detector.iou_threshold must be in (0, 1] (0: default), got ${spec.iouThreshold}`);
  if (!Number.isFinite(spec.padValue)) problems.push("detector.pad_value must be finite");
  return problems;
}

/**
 * Every way a model's outputs disagree with the spec's head layout for an `inputWidth` x `inputHeight` input:
 * missing outputs, wrong ranks, class counts, grid sizes or anchor counts. Dimensions a model leaves symbolic
 * are not checked; run the model once and pass the real dims to check them too. Empty when they match.
 */
export function checkDetectorOutputs(
  spec: DetectorSpec,
  outputs: ReadonlyArray<{ readonly name: string; readonly dims: DeclaredDims | undefined }>,
  inputWidth: number,
  inputHeight: number,
): string[] {
  const problems = checkDetectorSpec(spec);
  if (problems.length > 0) return problems;
  const byName = new Map(outputs.map((output) => [output.name, output.dims]));
  const names = detectorOutputNames(spec);
  const dimsOf = (index: number): DeclaredDims | undefined => {
    const name = names[index] as string;
    if (byName.has(name)) return byName.get(name);
    // YOLOX exports name their one output freely; take it when it is the only one.
    if (spec.head === DetectorHead.YOLOX && spec.outputNames.length === 0 && outputs.length === 1) return outputs[0]?.dims;
    problems.push(`the model has no output "${name}" (its outputs: ${outputs.map((o) => o.name).join(", ") || "none"})`);
    return undefined;
  };
  const expect = (name: string, dims: DeclaredDims, expected: readonly (number | undefined)[]): void => {
    if (dims.length !== expected.length) {
      problems.push(`output "${name}" must have rank ${expected.length}, got [${dims.map(String).join(", ")}]`);
      return;
    }
    expected.forEach((size, axis) => {
      const actual = dims[axis];
      if (size !== undefined && typeof actual === "number" && actual >= 0 && actual !== size) {
        problems.push(`output "${name}" dimension ${axis} must be ${size}, got ${actual}`);
      }
    });
  };
  const label = (index: number): string => names[index] ?? "output";
  const strides = detectorStrides(spec);
  switch (spec.head) {
    case DetectorHead.CENTERNET: {
      const stride = strides[0] as number;
      const gridW = Math.ceil(inputWidth / stride);
      const gridH = Math.ceil(inputHeight / stride);
      const channels = [spec.numClasses, 2, 2];
      channels.forEach((channelCount, index) => {
        const dims = dimsOf(index);
        if (dims !== undefined) expect(label(index), dims, [undefined, channelCount, gridH, gridW]);
      });
      break;
    }
    case DetectorHead.YOLOX: {
      const dims = dimsOf(0);
      const anchors = strides.reduce((sum, stride) => sum + Math.ceil(inputWidth / stride) * Math.ceil(inputHeight / stride), 0);
      if (dims !== undefined) expect(label(0), dims, [undefined, anchors, 5 + spec.numClasses]);
      break;
    }
    case DetectorHead.RTMDET: {
      const dets = dimsOf(0);
      const labels = dimsOf(1);
      if (dets !== undefined) expect(label(0), dets, [undefined, undefined, 5]);
      if (labels !== undefined) expect(label(1), labels, [undefined, undefined]);
      if (dets !== undefined && labels !== undefined && dets.length === 3 && labels.length === 2) {
        const [k1, k2] = [dets[1], labels[1]];
        if (typeof k1 === "number" && typeof k2 === "number" && k1 >= 0 && k2 >= 0 && k1 !== k2) {
          problems.push(`outputs "${label(0)}" and "${label(1)}" must list as many boxes, got ${k1} and ${k2}`);
        }
      }
      break;
    }
    case DetectorHead.BOXES_SCORES: {
      const boxes = dimsOf(0);
      const scores = dimsOf(1);
      if (boxes !== undefined) expect(label(0), boxes, [undefined, undefined, 4]);
      if (scores !== undefined) {
        if (scores.length === 2 && spec.numClasses === 1) expect(label(1), scores, [undefined, undefined]);
        else expect(label(1), scores, [undefined, undefined, spec.numClasses]);
      }
      if (boxes !== undefined && scores !== undefined && boxes.length === 3 && scores.length >= 2) {
        const [k1, k2] = [boxes[1], scores[1]];
        if (typeof k1 === "number" && typeof k2 === "number" && k1 >= 0 && k2 >= 0 && k1 !== k2) {
          problems.push(`outputs "${label(0)}" and "${label(1)}" must list as many boxes, got ${k1} and ${k2}`);
        }
      }
      break;
    }
    default:
      break;
  }
  return problems;
}
