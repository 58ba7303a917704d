import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { DetectorHead, DetectorSpecSchema, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { AppError, Code } from "@poseloop/core";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { decodeDetections, type DetectorOutput } from "./decode-detections.js";
import { detectorInput } from "./detector-input.js";
import { checkDetectorOutputs } from "./detector-layout.js";
import type { PersonDetection } from "./person-detection.js";
import { plantedDetector, plantedOutputs, type PlantedBox } from "./testing/detector-models.js";

const INPUT_W = 128;
const INPUT_H = 96;

/** COCO-like: three classes, person at index 1, so a class mix-up shows. */
function spec(head: DetectorHead, extra: Omit<MessageInitShape<typeof DetectorSpecSchema>, "$typeName"> = {}): DetectorSpec {
  return create(DetectorSpecSchema, { head, numClasses: 3, personClass: 1, ...extra });
}

const PEOPLE: PlantedBox[] = [
  { x1: 8, y1: 12, x2: 40, y2: 84, score: 0.92 },
  { x1: 70, y1: 20, x2: 110, y2: 90, score: 0.81 },
];
const DISTRACTORS: PlantedBox[] = [
  // A confident car where no person is.
  { x1: 44, y1: 40, x2: 64, y2: 60, score: 0.95, classIndex: 2 },
  // A person too faint for the default threshold (0.3).
  { x1: 90, y1: 2, x2: 120, y2: 14, score: 0.2 },
];

/** Runs the model with onnxruntime on a batch of `batch` blank inputs and returns its outputs by name. */
async function runDetector(model: Uint8Array, batch = 1): Promise<Record<string, DetectorOutput>> {
  const session = await ort.InferenceSession.create(model);
  try {
    const input = new ort.Tensor("float32", new Float32Array(batch * 3 * INPUT_H * INPUT_W), [batch, 3, INPUT_H, INPUT_W]);
    const results = await session.run({ input });
    return Object.fromEntries(
      Object.entries(results).map(([name, tensor]) => [name, { data: tensor.data as DetectorOutput["data"], dims: tensor.dims }]),
    );
  } finally {
    await session.release();
  }
}

function expectBoxes(actual: readonly PersonDetection[], expected: readonly PersonDetection[]): void {
  expect(actual).toHaveLength(expected.length);
  expected.forEach((box, i) => {
    const got = actual[i] as PersonDetection;
    for (const key of ["x1", "y1", "x2", "y2", "score"] as const) expect(got[key], `box ${i} ${key}`).toBeCloseTo(box[key], 4);
  });
}

const HEADS = [
  ["CENTERNET", spec(DetectorHead.CENTERNET, { strides: [4] })],
  ["YOLOX", spec(DetectorHead.YOLOX, { strides: [8, 16, 32] })],
  ["RTMDET", spec(DetectorHead.RTMDET)],
  ["BOXES_SCORES", spec(DetectorHead.BOXES_SCORES)],
] as const;

describe("decodeDetections on real onnxruntime outputs", () => {
  it.each(HEADS)("%s: finds the planted people, best first, and nothing else", async (_, detector) => {
    const outputs = await runDetector(plantedDetector(detector, [...PEOPLE, ...DISTRACTORS], INPUT_W, INPUT_H), 2);
    const batches = decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H });
    expect(batches).toHaveLength(2);
    for (const boxes of batches) expectBoxes(boxes, PEOPLE);
  });

  it.each(HEADS)("%s: honours the score threshold and max detections of the call", async (_, detector) => {
    const outputs = await runDetector(plantedDetector(detector, [...PEOPLE, ...DISTRACTORS], INPUT_W, INPUT_H));
    const low = decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H, scoreThreshold: 0.1 });
    expectBoxes(low[0] as PersonDetection[], [PEOPLE[0] as PlantedBox, PEOPLE[1] as PlantedBox, DISTRACTORS[1] as PlantedBox]);
    const one = decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H, maxDetections: 1 });
    expectBoxes(one[0] as PersonDetection[], [PEOPLE[0] as PlantedBox]);
  });

  it("YOLOX: a box's score is objectness times the person score, and NMS drops a duplicate", async () => {
    const detector = spec(DetectorHead.YOLOX, { strides: [8, 16, 32] });
    const [output] = plantedOutputs(detector, [PEOPLE[0] as PlantedBox, { ...(PEOPLE[0] as PlantedBox), x1: 9, score: 0.7 }], INPUT_W, INPUT_H);
    const rows = Float32Array.from(output!.values);
    rows[4] = 0.5; // objectness of the first box: 0.5 x 0.92
    const boxes = decodeDetections(detector, { output: { data: rows, dims: [1, ...output!.dims] } }, { inputWidth: INPUT_W, inputHeight: INPUT_H });
    expect(boxes[0]?.map((b) => b.score)).toEqual([expect.closeTo(0.7, 5)]);
    const loose = decodeDetections(detector, { output: { data: rows, dims: [1, ...output!.dims] } }, { inputWidth: INPUT_W, inputHeight: INPUT_H, iouThreshold: 0.99 });
    expect(loose[0]?.map((b) => b.score)).toEqual([expect.closeTo(0.7, 5), expect.closeTo(0.46, 5)]);
  });

  it("BOXES_SCORES with one class reads scores [N, K]", async () => {
    const detector = create(DetectorSpecSchema, { head: DetectorHead.BOXES_SCORES, numClasses: 1 });
    const outputs = await runDetector(plantedDetector(detector, PEOPLE, INPUT_W, INPUT_H));
    expect(outputs["scores"]?.dims).toEqual([1, PEOPLE.length + 3]);
    expectBoxes(decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H })[0] as PersonDetection[], PEOPLE);
  });

  it("maps decoded boxes to frame pixels through the letterbox", async () => {
    const detector = spec(DetectorHead.CENTERNET, { strides: [4] });
    const outputs = await runDetector(plantedDetector(detector, PEOPLE, INPUT_W, INPUT_H));
    // A 512x256 frame letterboxed into 128x96: scale 0.25, content 128x64; the second person reaches into the padding.
    const geometry = detectorInput(512, 256, detector, INPUT_W, INPUT_H);
    const boxes = (decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H })[0] as PersonDetection[]).map(geometry.toFrame);
    expectBoxes(boxes, [
      { x1: 32, y1: 48, x2: 160, y2: 256, score: 0.92 },
      { x1: 280, y1: 80, x2: 440, y2: 256, score: 0.81 },
    ]);
  });

  it("uses the manifest's output names", async () => {
    const detector = spec(DetectorHead.RTMDET, { outputNames: ["boxes_and_scores", "classes"] });
    const outputs = await runDetector(plantedDetector(detector, PEOPLE, INPUT_W, INPUT_H));
    expect(Object.keys(outputs).sort()).toEqual(["boxes_and_scores", "classes"]);
    expectBoxes(decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H })[0] as PersonDetection[], PEOPLE);
  });
});

describe("outputs that do not match the head layout", () => {
  it("are a FAILED_PRECONDITION naming every mismatch", () => {
    const detector = spec(DetectorHead.CENTERNET, { strides: [4] });
    const outputs = {
      centers: { data: new Float32Array(2 * 24 * 32), dims: [1, 2, 24, 32] },
      sizes: { data: new Float32Array(2 * 12 * 16), dims: [1, 2, 12, 16] },
    };
    let error: unknown;
    try {
      decodeDetections(detector, outputs, { inputWidth: INPUT_W, inputHeight: INPUT_H });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe(Code.FAILED_PRECONDITION);
    expect((error as AppError).problems).toEqual([
      'output "centers" dimension 1 must be 3, got 2',
      'output "sizes" dimension 2 must be 24, got 12',
      'output "sizes" dimension 3 must be 32, got 16',
      'the model has no output "offsets" (its outputs: centers, sizes)',
    ]);
  });

  it("skip symbolic dimensions but check the rest of a declared signature", () => {
    const detector = spec(DetectorHead.YOLOX, { strides: [8, 16, 32] });
    // 128x96: 16x12 + 8x6 + 4x3 = 252 anchor points.
    expect(checkDetectorOutputs(detector, [{ name: "output", dims: ["batch", "anchors", 8] }], INPUT_W, INPUT_H)).toEqual([]);
    expect(checkDetectorOutputs(detector, [{ name: "output", dims: ["batch", 252, 85] }], INPUT_W, INPUT_H)).toEqual([
      'output "output" dimension 2 must be 8, got 85',
    ]);
    expect(checkDetectorOutputs(detector, [{ name: "output", dims: [1, 300, 8] }], INPUT_W, INPUT_H)).toEqual([
      'output "output" dimension 1 must be 252, got 300',
    ]);
  });

  it("list a spec's own problems first", () => {
    const detector = create(DetectorSpecSchema, { head: DetectorHead.UNSPECIFIED, numClasses: 2, personClass: 2, scoreThreshold: 1.5 });
    expect(checkDetectorOutputs(detector, [], INPUT_W, INPUT_H)).toEqual([
      "detector.head must be one of CENTERNET, YOLOX, RTMDET, BOXES_SCORES, got 0",
      "detector.person_class 2 must be below num_classes 2",
      "detector.score_threshold must be in [0, 1], got 1.5",
    ]);
  });
});
