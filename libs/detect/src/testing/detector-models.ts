import { DetectorHead, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { encodeModel, GraphBuilder, hostTensor, int } from "@poseloop/onnx";
import { detectorOutputNames, detectorStrides } from "../detector-layout.js";
import type { PersonDetection } from "../person-detection.js";

/** One output of a test detector: the same tensor (without the batch axis) for every batch item. */
export interface FixedOutput {
  readonly name: string;
  readonly dtype: "float32" | "int64";
  readonly dims: readonly number[];
  readonly values: ArrayLike<number>;
}

/** A box the test detector reports, with the class it reports it for (default: the person class). */
export interface PlantedBox extends PersonDetection {
  readonly classIndex?: number;
}

/**
 * An ONNX detector taking "input" [N, 3, H, W] whose outputs are the given tensors repeated over the batch:
 * a real graph onnxruntime runs (Shape → Slice → Concat → Expand per output), so the batch axis is dynamic
 * exactly as in an exported detector.
 */
export function fixedOutputDetector(inputWidth: number, inputHeight: number, outputs: readonly FixedOutput[]): Uint8Array {
  const g = new GraphBuilder({ name: "fixed_detector" });
  const input = g.input("input", "float32", ["batch", 3, inputHeight, inputWidth]);
  const shape = g.op("Shape", [input]);
  const batch = g.op("Slice", [shape, g.int64s([0]), g.int64s([1])]);
  for (const output of outputs) {
    const values = output.dtype === "int64" ? Array.from(output.values, (v) => BigInt(v)) : output.values;
    const constant = g.constant(hostTensor(output.dtype, [1, ...output.dims], values), `${output.name}_value`);
    const target = g.op("Concat", [batch, g.int64s([...output.dims])], { axis: int(0) });
    const expanded = g.op("Expand", [constant, target], {}, { dtype: output.dtype, shape: ["batch", ...output.dims] });
    g.output(expanded, output.name);
  }
  return encodeModel(g.build());
}

/**
 * The outputs a detector with `spec`'s head layout gives for an input of `inputWidth` x `inputHeight` in which
 * it finds `boxes` (input pixels): the layout the proto documents, with the boxes planted where a real
 * detector would put them (CenterNet: at each centre's cell; YOLOX: on anchors of the finest level).
 */
export function plantedOutputs(spec: DetectorSpec, boxes: readonly PlantedBox[], inputWidth: number, inputHeight: number): FixedOutput[] {
  const names = detectorOutputNames(spec);
  const name = (index: number): string => names[index] as string;
  const classes = spec.numClasses;
  const classOf = (box: PlantedBox): number => box.classIndex ?? spec.personClass;
  switch (spec.head) {
    case DetectorHead.CENTERNET: {
      const stride = detectorStrides(spec)[0] as number;
      const width = Math.ceil(inputWidth / stride);
      const height = Math.ceil(inputHeight / stride);
      const plane = width * height;
      const centers = new Float32Array(classes * plane).fill(0.01);
      const sizes = new Float32Array(2 * plane);
      const offsets = new Float32Array(2 * plane);
      for (const box of boxes) {
        const cx = (box.x1 + box.x2) / 2 / stride;
        const cy = (box.y1 + box.y2) / 2 / stride;
        const cell = Math.floor(cy) * width + Math.floor(cx);
        centers[classOf(box) * plane + cell] = box.score;
        sizes[cell] = (box.x2 - box.x1) / stride;
        sizes[plane + cell] = (box.y2 - box.y1) / stride;
        offsets[cell] = cx - Math.floor(cx);
        offsets[plane + cell] = cy - Math.floor(cy);
      }
      return [
        { name: name(0), dtype: "float32", dims: [classes, height, width], values: centers },
        { name: name(1), dtype: "float32", dims: [2, height, width], values: sizes },
        { name: name(2), dtype: "float32", dims: [2, height, width], values: offsets },
      ];
    }
    case DetectorHead.YOLOX: {
      const anchors = detectorStrides(spec).reduce((sum, s) => sum + Math.ceil(inputWidth / s) * Math.ceil(inputHeight / s), 0);
      const row = 5 + classes;
      const rows = new Float32Array(anchors * row);
      // Background anchors: a small box with low objectness, as a real head outputs everywhere.
      for (let a = 0; a < anchors; a++) rows.set([8, 8, 4, 4, 0.02], a * row);
      boxes.forEach((box, i) => {
        const offset = (i * 7) * row;
        rows.set([(box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2, box.x2 - box.x1, box.y2 - box.y1, 1], offset);
        rows[offset + 5 + classOf(box)] = box.score;
      });
      return [{ name: name(0), dtype: "float32", dims: [anchors, row], values: rows }];
    }
    case DetectorHead.RTMDET: {
      const k = Math.max(boxes.length + 2, 8);
      const dets = new Float32Array(k * 5);
      const labels = new Int32Array(k).fill(-1);
      boxes.forEach((box, i) => {
        dets.set([box.x1, box.y1, box.x2, box.y2, box.score], i * 5);
        labels[i] = classOf(box);
      });
      return [
        { name: name(0), dtype: "float32", dims: [k, 5], values: dets },
        { name: name(1), dtype: "int64", dims: [k], values: labels },
      ];
    }
    default: {
      const k = boxes.length + 3;
      const coords = new Float32Array(k * 4);
      const scores = new Float32Array(k * classes);
      // Unused rows: a valid box scoring zero everywhere.
      for (let i = boxes.length; i < k; i++) coords.set([0, 0, 10, 10], i * 4);
      boxes.forEach((box, i) => {
        coords.set([box.x1, box.y1, box.x2, box.y2], i * 4);
        scores[i * classes + classOf(box)] = box.score;
      });
      return [
        { name: name(0), dtype: "float32", dims: [k, 4], values: coords },
        { name: name(1), dtype: "float32", dims: classes === 1 ? [k] : [k, classes], values: scores },
      ];
    }
  }
}

/** A detector with `spec`'s head layout that finds `boxes` (input pixels) in every input: the ONNX bytes. */
export function plantedDetector(spec: DetectorSpec, boxes: readonly PlantedBox[], inputWidth: number, inputHeight: number): Uint8Array {
  return fixedOutputDetector(inputWidth, inputHeight, plantedOutputs(spec, boxes, inputWidth, inputHeight));
}
