import { create } from "@bufbuild/protobuf";
import { sleep } from "@poseloop/core";
import { syntheticClip, type ClipFrame } from "@poseloop/data";
import type { PlantedBox } from "@poseloop/detect/testing";
import { DetectorHead } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { FrameSchema, PersonSource, PixelFormat, type Frame, type FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { PromotionDecisionSchema, PromotionMode, PromotionVerdict, type PromotionDecision, type PromotionPolicySchema } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { waitFor } from "@poseloop/testkit";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHarness, streamRequests, type InferencerHarness } from "../testing/harness.js";
import { publishTestDetector } from "../testing/test-detectors.js";
import { buildTestModel, publishTestModel, type TestModel } from "../testing/test-models.js";

// Trials on streams whose people come from the person detector: the candidate must be run on the crops the
// serving answer used (the detector's boxes of that frame), or the agreement compares poses of different crops.

const natsUrl = inject("natsUrl");
const MODEL = "trial-detector-pose";
const DETECTOR = "trial-people";
const WINDOW = 12;
const FRAME_W = 256;
const FRAME_H = 192;

const clip: ClipFrame[] = [...syntheticClip({ width: FRAME_W, height: FRAME_H, frames: 30, seed: 11 })];

function rawFrame(i: number): Frame {
  const frame = clip[i % clip.length] as ClipFrame;
  return create(FrameSchema, {
    frameId: BigInt(i),
    ptsUs: BigInt(Math.round((i * 1e6) / 30)),
    image: { case: "raw", value: { width: frame.image.width, height: frame.image.height, format: PixelFormat.RGB8, data: frame.image.data } },
  });
}

let harness: InferencerHarness;
let serving: TestModel;
/** The boxes the detector finds in every frame, in frame pixels. */
let boxes: [number, number, number, number][];

beforeAll(async () => {
  // Around the first frame's people, so the crops hold people (the detector's input is the frame at half scale).
  boxes = (clip[0] as ClipFrame).people.filter((p) => p.bbox[2] >= 12 && p.bbox[3] >= 24).map((p) => [...p.bbox]);
  const planted: PlantedBox[] = boxes.map(([x, y, w, h], i) => ({ x1: x / 2, y1: y / 2, x2: (x + w) / 2, y2: (y + h) / 2, score: 0.9 - 0.1 * i }));
  serving = await buildTestModel({ seed: 1 });
  harness = await startHarness(natsUrl, MODEL, { POSELOOP_DETECTOR_MODEL: DETECTOR });
  await publishTestModel(harness.registry, MODEL, serving, { version: "baseline" });
  await publishTestDetector(harness.registry, DETECTOR, { inputWidth: FRAME_W / 2, inputHeight: FRAME_H / 2, boxes: planted, spec: { head: DetectorHead.CENTERNET, numClasses: 1, strides: [4] } });
  await harness.inferencer.models.waitForServing(20_000);
  await waitFor(() => harness.inferencer.detectors?.current !== undefined, { timeoutMs: 20_000, what: "the detector serving" });
});

afterAll(async () => harness?.close());

/** Publishes a copy of the serving model as `version` without promoting it, and puts it on trial under `policy`. */
async function startTrial(version: string, policy: MessageInitShape<typeof PromotionPolicySchema>): Promise<void> {
  const published = await publishTestModel(harness.registry, MODEL, serving, { version, promote: false, trainingJobId: `job-${version}` });
  const set = await harness.registry.setPolicy(MODEL, { windowFrames: WINDOW, minMeanOks: 0.9, maxFailureRate: 0.05, maxTrialSeconds: 60, ...policy }, { setBy: "test" });
  await harness.registry.startTrial(MODEL, published.manifest.model ?? {}, set, { setBy: `job-${version}` });
}

/**
 * Streams the clip with person_source DETECTOR; once answered, puts a copy of the serving model on trial as
 * `version`, and streams on until the verdict (and, when promoted, until the candidate serves here).
 */
async function trialOnDetectorStream(version: string, policy: MessageInitShape<typeof PromotionPolicySchema>): Promise<{ decision: PromotionDecision; results: FrameResult[] }> {
  let decision: PromotionDecision | undefined;
  const done = (): boolean => decision !== undefined && (decision.verdict !== PromotionVerdict.PROMOTED || harness.inferencer.models.current?.version === version);
  const results: FrameResult[] = [];
  async function* frames() {
    let tail = 5;
    for (let i = 0; i < 3000 && tail > 0; i++) {
      if (done()) tail--;
      yield rawFrame(i);
      await sleep(20);
    }
  }
  const streaming = (async () => {
    for await (const response of harness.client.streamKeypoints(streamRequests({ streamName: `cam-${version}`, personSource: PersonSource.DETECTOR }, frames()))) {
      if (response.payload.case === "result") results.push(response.payload.value);
    }
  })();
  try {
    await waitFor(() => results.length >= 3, { timeoutMs: 10_000, what: "the stream answered" });
    await startTrial(version, policy);
    decision = await waitFor(
      async () => (await harness.registry.decisions(MODEL)).find((d) => d.candidate?.version === version && d.verdict !== PromotionVerdict.TRIAL_STARTED),
      { timeoutMs: 30_000, intervalMs: 50, what: `a verdict on ${version}` },
    );
    await streaming;
    return { decision, results };
  } finally {
    decision ??= create(PromotionDecisionSchema);
    await streaming;
  }
}

/** Every frame answered in order, none failed, each person on one of the detector's boxes. */
function expectDetectedPeople(results: readonly FrameResult[]): void {
  expect(results.map((r) => Number(r.frameId))).toEqual(results.map((_, i) => i));
  for (const result of results) {
    expect(result.status?.code ?? 0).toBe(0);
    expect(result.detector?.name).toBe(DETECTOR);
    expect(result.persons).toHaveLength(boxes.length);
    for (const person of result.persons) {
      const box = [person.bbox?.x ?? 0, person.bbox?.y ?? 0, person.bbox?.width ?? 0, person.bbox?.height ?? 0];
      expect(boxes.some((b) => b.every((v, j) => Math.abs(v - (box[j] as number)) < 1)), `a person at ${box.join(",")}`).toBe(true);
    }
  }
}

describe("trials on a detector stream", () => {
  it("finds several people in the clip's frames", () => {
    expect(boxes.length).toBeGreaterThanOrEqual(2);
  });

  it("shadow: a candidate identical to the serving model is promoted, its copies run on the detector's boxes", async () => {
    const { decision, results } = await trialOnDetectorStream("shadow-same", { mode: PromotionMode.SHADOW });
    expect(decision.verdict, decision.reason).toBe(PromotionVerdict.PROMOTED);
    expect(decision.agreement?.frames).toBe(BigInt(WINDOW));
    expect(decision.agreement?.meanOks).toBeCloseTo(1, 6);
    expect(decision.agreement?.candidateFailureRate).toBe(0);
    expectDetectedPeople(results);
  });

  it("canary: the candidate answers detector → candidate pose, the serving copy runs on the same boxes, and it is promoted", async () => {
    const { decision, results } = await trialOnDetectorStream("canary-same", { mode: PromotionMode.CANARY, canaryFraction: 1 });
    expect(decision.verdict, decision.reason).toBe(PromotionVerdict.PROMOTED);
    expect(decision.agreement?.meanOks).toBeCloseTo(1, 6);
    expectDetectedPeople(results);
    // The candidate answered the stream during the trial, on the detector's people.
    expect(results.some((r) => r.model?.version === "canary-same" && r.persons.length === boxes.length)).toBe(true);
  });
});
