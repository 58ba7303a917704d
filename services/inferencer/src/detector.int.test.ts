import { AppError, Code } from "@poseloop/core";
import { SeededRandom, renderSyntheticScene } from "@poseloop/data";
import type { PlantedBox } from "@poseloop/detect/testing";
import { DetectorHead } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DeliveryMode, PersonSource, ServingEventKind, type FrameResult, type StreamKeypointsResponse } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { waitFor } from "@poseloop/testkit";
import { encodeJpeg } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { ServingEvent } from "./model-manager.js";
import { jpegFrame, pacedJpegFrames, startHarness, streamRequests, type InferencerHarness } from "./testing/harness.js";
import { publishTestDetector } from "./testing/test-detectors.js";
import { buildTestModel, publishTestModel } from "./testing/test-models.js";

const natsUrl = inject("natsUrl");

const FRAME_W = 256;
const FRAME_H = 192;
// The detector's input: the frame letterboxed at scale 0.5, so an input pixel is two frame pixels.
const INPUT_W = 128;
const INPUT_H = 96;
const DETECTOR = "people";
const POSE = "detector-pose";

let harness: InferencerHarness;
let jpeg: Uint8Array;
/** The scene's people, frame pixels [x, y, w, h], and the boxes the test detectors report for them (input pixels). */
let people: [number, number, number, number][];
let planted: PlantedBox[];

function iou(a: readonly number[], b: readonly number[]): number {
  const [ax = 0, ay = 0, aw = 0, ah = 0] = a;
  const [bx = 0, by = 0, bw = 0, bh = 0] = b;
  const w = Math.min(ax + aw, bx + bw) - Math.max(ax, bx);
  const h = Math.min(ay + ah, by + bh) - Math.max(ay, by);
  return w > 0 && h > 0 ? (w * h) / (aw * ah + bw * bh - w * h) : 0;
}

/** The persons' boxes of a result, left to right, rounded to 0.1 px. */
function boxesOf(result: FrameResult | undefined): number[][] {
  return (result?.persons ?? []).map((p) => [p.bbox?.x ?? 0, p.bbox?.y ?? 0, p.bbox?.width ?? 0, p.bbox?.height ?? 0].map((v) => Math.round(v * 10) / 10)).sort((a, b) => (a[0] as number) - (b[0] as number));
}

function expectPeopleFound(result: FrameResult | undefined): void {
  const found = boxesOf(result);
  expect(found).toHaveLength(people.length);
  people.forEach((box, i) => {
    const got = found[i] as number[];
    box.forEach((v, j) => expect(Math.abs((got[j] as number) - v), `person ${i} box[${j}]: ${got.join(",")} vs ${box.join(",")}`).toBeLessThan(0.2));
  });
}

beforeAll(async () => {
  // A still multi-person scene; the people that overlap a lot are left out, so each one is a separate box.
  const scene = renderSyntheticScene(new SeededRandom(5), { width: FRAME_W, height: FRAME_H, minPeople: 3, maxPeople: 3, occlusion: 0, blur: 0 });
  people = [];
  for (const person of scene.people) {
    if (person.bbox[2] < 8 || person.bbox[3] < 8 || people.some((p) => iou(p, person.bbox) > 0.2)) continue;
    people.push([...person.bbox]);
  }
  people.sort((a, b) => a[0] - b[0]);
  planted = people.map(([x, y, w, h], i) => ({ x1: x / 2, y1: y / 2, x2: (x + w) / 2, y2: (y + h) / 2, score: 0.9 - 0.1 * i }));
  const [pose, encoded] = await Promise.all([buildTestModel({ seed: 1, int8: false }), encodeJpeg(scene.image, 90)]);
  jpeg = encoded;
  harness = await startHarness(natsUrl, POSE, { POSELOOP_DETECTOR_MODEL: DETECTOR });
  await publishTestModel(harness.registry, POSE, pose);
  await harness.inferencer.models.waitForServing(20_000);
});

afterAll(async () => harness?.close());

async function streamError(options: Parameters<typeof streamRequests>[0]): Promise<unknown> {
  try {
    for await (const _response of harness.client.streamKeypoints(streamRequests(options, [jpegFrame(0, jpeg)]))) {
      // The options are refused before any result.
    }
  } catch (error) {
    return error;
  }
  return undefined;
}

describe("inferencer: person detector", () => {
  it("checks person_source and the detector options before a detector serves", async () => {
    expect(people.length).toBeGreaterThanOrEqual(2);
    const noDetector = await streamError({ personSource: PersonSource.DETECTOR });
    expect(AppError.is(noDetector, Code.FAILED_PRECONDITION), String(noDetector)).toBe(true);
    expect(String((noDetector as Error).message)).toMatch(/no version of the person detector people is serving/);
    const single = await harness.client.detectKeypoints({ frame: jpegFrame(1, jpeg), personSource: PersonSource.DETECTOR }).catch((e: unknown) => e);
    expect(AppError.is(single, Code.FAILED_PRECONDITION), String(single)).toBe(true);

    const invalid = await streamError({ detector: { scoreThreshold: 1.5, iouThreshold: -0.1 }, personSource: 9 as PersonSource });
    expect(AppError.is(invalid, Code.INVALID_ARGUMENT), String(invalid)).toBe(true);
    const message = String((invalid as Error).message);
    expect(message).toMatch(/3 problems/);
    expect(message).toMatch(/person_source 9 is not a PersonSource/);
    expect(message).toMatch(/detector.score_threshold must be a finite number in \[0, 1\].*got 1.5/);
    expect(message).toMatch(/detector.iou_threshold must be a finite number in \(0, 1\].*got -0.1/);
    const unknown = await streamError({ detector: { modelName: "yolox" } });
    expect(AppError.is(unknown, Code.NOT_FOUND), String(unknown)).toBe(true);

    // Without a detector serving, a frame without boxes is one whole-frame person.
    const { result } = await harness.client.detectKeypoints({ frame: jpegFrame(2, jpeg) });
    expect(boxesOf(result)).toEqual([[0, 0, FRAME_W, FRAME_H]]);
    expect(result?.detector).toBeUndefined();
  });

  it("finds the people of frames without boxes where they are, hot-swaps the detector mid-stream without dropping a frame, and keeps it over a broken one", async () => {
    const v1 = (await publishTestDetector(harness.registry, DETECTOR, { inputWidth: INPUT_W, inputHeight: INPUT_H, boxes: planted, spec: { head: DetectorHead.CENTERNET, numClasses: 1, strides: [4] } })).manifest.model?.version ?? "";
    await waitFor(() => harness.inferencer.detectors?.current?.version === v1, { timeoutMs: 20_000, what: "detector v1 serving" });

    const { result: single } = await harness.client.detectKeypoints({ frame: jpegFrame(3, jpeg) });
    expectPeopleFound(single);
    expect(single?.detector?.version).toBe(v1);
    expect(single?.model?.name).toBe(POSE);
    expect(single?.persons[0]?.keypoints).toHaveLength(17);
    // Each box carries its detector score.
    const scores = [...(single?.persons ?? [])].sort((a, b) => (a.bbox?.x ?? 0) - (b.bbox?.x ?? 0)).map((p) => p.bbox?.score ?? 0);
    planted.forEach((box, i) => expect(scores[i]).toBeCloseTo(box.score, 5));

    // A YOLOX-style detector (80 classes, person 0) under the same name, published while a stream runs.
    let swap: Promise<string> | undefined;
    const frames = pacedJpegFrames([jpeg], 60, 30, (i) => {
      if (i === 20) {
        swap = publishTestDetector(harness.registry, DETECTOR, { inputWidth: INPUT_W, inputHeight: INPUT_H, boxes: planted, spec: { head: DetectorHead.BOXES_SCORES, numClasses: 80, personClass: 0 } }).then((r) => r.manifest.model?.version ?? "");
      }
    });
    const responses: StreamKeypointsResponse[] = [];
    for await (const response of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, personSource: PersonSource.DETECTOR, detector: { scoreThreshold: 0.5 } }, frames))) responses.push(response);
    const v2 = await (swap as Promise<string>);
    const answered = responses.flatMap((r) => (r.payload.case === "result" ? [r.payload.value] : []));
    expect(responses.some((r) => r.payload.case === "dropped")).toBe(false);
    expect(answered.map((r) => Number(r.frameId))).toEqual(Array.from({ length: 60 }, (_, i) => i));
    for (const r of answered) {
      expect(r.status?.code ?? 0).toBe(0);
      expectPeopleFound(r);
    }
    const versions = answered.map((r) => r.detector?.version);
    const switchAt = versions.indexOf(v2);
    expect(versions[0]).toBe(v1);
    expect(switchAt).toBeGreaterThanOrEqual(20);
    expect(versions.slice(0, switchAt).every((v) => v === v1)).toBe(true);
    expect(versions.slice(switchAt).every((v) => v === v2)).toBe(true);

    // A publication whose manifest says CENTERNET but whose model outputs boxes and scores: rejected at load.
    const events: ServingEvent[] = [];
    const watch = new AbortController();
    const watching = (async () => {
      for await (const event of harness.inferencer.detectors!.events(watch.signal)) events.push(event);
    })().catch(() => undefined);
    const broken = (await publishTestDetector(harness.registry, DETECTOR, { inputWidth: INPUT_W, inputHeight: INPUT_H, boxes: planted, spec: { head: DetectorHead.CENTERNET, numClasses: 1, strides: [4] }, actual: { head: DetectorHead.BOXES_SCORES, numClasses: 1 } })).manifest.model?.version;
    await waitFor(() => events.some((e) => e.kind === ServingEventKind.LOAD_FAILED && e.candidate?.version === broken), { timeoutMs: 20_000, what: "the broken detector's LOAD_FAILED" });
    watch.abort();
    await watching;
    const failure = events.find((e) => e.kind === ServingEventKind.LOAD_FAILED);
    expect(failure?.error?.code).toBe(Code.FAILED_PRECONDITION);
    expect(failure?.error?.message).toMatch(/does not match its manifest's head layout.*no output "centers"/);
    expect(harness.inferencer.detectors?.current?.version).toBe(v2);
    // GetServingModel answers for the detector's name: the version serving, and the one it replaced.
    const serving = await harness.client.getServingModel({ modelName: DETECTOR });
    expect(serving.manifest?.model?.version).toBe(v2);
    expect(serving.previous.map((ref) => ref.version)).toEqual([v1]);
    const { result: after } = await harness.client.detectKeypoints({ frame: jpegFrame(4, jpeg) });
    expect(after?.detector?.version).toBe(v2);
    expectPeopleFound(after);
  });

  it("keeps max_persons best detections, and honours the other person sources", async () => {
    await waitFor(() => harness.inferencer.detectors?.current !== undefined, { timeoutMs: 20_000, what: "a detector serving" });
    const { result: best } = await harness.client.detectKeypoints({ frame: jpegFrame(5, jpeg), maxPersons: 1 });
    const [x, y, w, h] = people[0] as number[];
    expect(boxesOf(best).map((b) => b.map(Math.round))).toEqual([[x, y, w, h].map((v) => Math.round(v as number))]);

    // A score threshold above every box: nobody, and no pose batch.
    const { result: nobody } = await harness.client.detectKeypoints({ frame: jpegFrame(6, jpeg), detector: { scoreThreshold: 0.95 } });
    expect(nobody?.persons).toHaveLength(0);
    expect(nobody?.detector?.version).toBe(harness.inferencer.detectors?.current?.version);
    expect(nobody?.imageWidth).toBe(FRAME_W);

    const { result: whole } = await harness.client.detectKeypoints({ frame: jpegFrame(7, jpeg), personSource: PersonSource.WHOLE_FRAME });
    expect(boxesOf(whole)).toEqual([[0, 0, FRAME_W, FRAME_H]]);
    expect(whole?.detector).toBeUndefined();

    const { result: noBoxes } = await harness.client.detectKeypoints({ frame: jpegFrame(8, jpeg), personSource: PersonSource.CLIENT_BOXES });
    expect(noBoxes?.persons).toHaveLength(0);
    expect(noBoxes?.model?.name).toBe(POSE);

    // The client's boxes win over the detector when a frame has them (UNSPECIFIED).
    const frame = jpegFrame(9, jpeg);
    frame.personBoxes.push({ $typeName: "poseloop.common.v1.BoundingBox", x: 10, y: 20, width: 50, height: 100, score: 0 });
    const { result: client } = await harness.client.detectKeypoints({ frame });
    expect(boxesOf(client)).toEqual([[10, 20, 50, 100]]);
    expect(client?.detector).toBeUndefined();
  });
});
