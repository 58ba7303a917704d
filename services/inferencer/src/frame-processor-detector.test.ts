import { create } from "@bufbuild/protobuf";
import { context } from "@opentelemetry/api";
import { Code, silentLogger } from "@poseloop/core";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import { FrameSchema, ImageFormat, PersonSource } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { installTestMetrics } from "@poseloop/telemetry";
import { afterEach, describe, expect, it } from "vitest";
import type { BatchScheduler, ScheduledResult } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import type { DetectorServingSpec } from "./detector-spec.js";
import { FrameProcessor, type DetectorStage } from "./frame-processor.js";
import { personsInit, type FrameSettings } from "./frame-conversion.js";
import { InferencerMetric } from "./metrics.js";
import type { DetectionJob, DetectionOutcome } from "./person-detector.js";
import type { ServingHandle } from "./serving-handle.js";

const limits = { maxFrameBytes: 1 << 20, maxFramePixels: 1 << 22, maxBoxesPerFrame: 64 } as InferenceLimits;
const jpeg = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]);
const timings = { decodeUs: 100, preprocessUs: 200, inferenceUs: 300, postprocessUs: 40 };
const poseHandle = { version: "p1", ref: { name: "demo", version: "p1" }, spec: { numKeypoints: 1 }, trainingJobId: "job", publishLink: undefined } as unknown as ServingHandle;
const detectorHandle = { version: "d1", ref: { name: "people", version: "d1" }, trainingJobId: "job", publishLink: undefined } as unknown as ServingHandle<DetectorServingSpec>;
const decoded = { kind: "raw" as const, width: 64, height: 48, format: "RGB8" as const, stride: 192, data: new Uint8Array(64 * 48 * 3) };

function frame(boxes: { x: number; y: number; width: number; height: number }[] = []) {
  return create(FrameSchema, { frameId: 1n, image: { case: "encoded", value: { data: jpeg, format: ImageFormat.JPEG } }, personBoxes: boxes.map((b) => ({ ...b, score: 0 })) });
}

/** A pose lane that answers each box with a person (keypoints at the box's corner) and records the jobs it got. */
function poseLane(jobs: FrameJob[]): BatchScheduler {
  const submit = (job: FrameJob): Promise<ScheduledResult> => {
    jobs.push(job);
    const boxes = job.boxes.length === 0 ? [{ x: 0, y: 0, width: 64, height: 48 }] : job.boxes;
    const outcome: FrameOutcome = { ok: true, width: 64, height: 48, timings, persons: boxes.map((bbox) => ({ bbox, score: 0.8, keypoints: Float32Array.of(bbox.x, bbox.y, 1) })) };
    return Promise.resolve({ outcome, handle: poseHandle, queueUs: 7 });
  };
  return { submit } as unknown as BatchScheduler;
}

function detectorStage(jobs: DetectionJob[], outcome: DetectionOutcome, serving = true): DetectorStage {
  return {
    serving: () => serving,
    scheduler: {
      submit: (job: DetectionJob) => {
        jobs.push(job);
        return Promise.resolve({ outcome, handle: detectorHandle, queueUs: 5 });
      },
    },
  };
}

const detected: DetectionOutcome = {
  ok: true,
  width: 64,
  height: 48,
  image: decoded,
  timings: { decodeUs: 1000, preprocessUs: 20, inferenceUs: 30, postprocessUs: 10 },
  boxes: [
    { x: 4, y: 2, width: 10, height: 30, score: 0.9 },
    { x: 30, y: 5, width: 12, height: 40, score: 0.6 },
  ],
};

function settings(people: FrameSettings["people"], extra: Partial<FrameSettings> = {}): FrameSettings {
  return { flipTest: false, minKeypointScore: 0.2, maxPersons: 0, ...(people === undefined ? {} : { people }), ...extra };
}

const call = { parent: context.active(), logger: silentLogger };

describe("FrameProcessor with a person detector", () => {
  let recorded: ReturnType<typeof installTestMetrics> | undefined;
  afterEach(async () => {
    await recorded?.shutdown();
    recorded = undefined;
  });

  it("crops the detector's boxes from the frame it decoded, names its version and records the detect stage", async () => {
    recorded = installTestMetrics();
    const poseJobs: FrameJob[] = [];
    const detectionJobs: DetectionJob[] = [];
    const processor = new FrameProcessor(poseLane(poseJobs), { limits, frameTraceRatio: 0, modelName: "demo", detector: detectorStage(detectionJobs, detected) });
    const processed = await processor.process(frame(), settings({ personSource: PersonSource.DETECTOR, scoreThreshold: 0.4, iouThreshold: 0.6 }, { maxPersons: 2, histogram: true }), call);

    expect(processed.ok).toBe(true);
    expect(detectionJobs).toEqual([{ image: { kind: "encoded", data: jpeg }, scoreThreshold: 0.4, iouThreshold: 0.6, maxDetections: 2, histogram: true }]);
    expect(poseJobs).toHaveLength(1);
    expect(poseJobs[0]?.image).toBe(decoded);
    expect(poseJobs[0]?.boxes).toEqual([{ x: 4, y: 2, width: 10, height: 30 }, { x: 30, y: 5, width: 12, height: 40 }]);
    expect(poseJobs[0]?.histogram).toBeUndefined();
    expect(processed.result.detector).toEqual(detectorHandle.ref);
    expect(processed.result.model).toEqual(poseHandle.ref);
    expect(personsInit(processed.estimates).map((p) => p.bbox?.score)).toEqual([expect.closeTo(0.9, 6), expect.closeTo(0.6, 6)]);
    expect(processed.result.timings).toMatchObject({ queueUs: 12, decodeUs: 1100, preprocessUs: 220, inferenceUs: 330, postprocessUs: 50 });

    const stages = await recorded.points(InferencerMetric.frameDuration);
    const detect = stages.find((point) => point.attributes.stage === "detect");
    expect(detect?.count).toBe(1);
    expect(detect?.value).toBeCloseTo(60e-6, 9);
  });

  it("runs no pose batch for a frame the detector finds nobody in", async () => {
    const poseJobs: FrameJob[] = [];
    const processor = new FrameProcessor(poseLane(poseJobs), { limits, frameTraceRatio: 0, modelName: "demo", detector: detectorStage([], { ...detected, boxes: [] }), poseModel: () => poseHandle.ref });
    const observed: FrameJob[] = [];
    const processed = await processor.process(frame(), settings(undefined), call, (job) => observed.push(job));
    expect(processed.ok).toBe(true);
    expect(processed.estimates).toEqual([]);
    expect(poseJobs).toHaveLength(0);
    expect(observed).toHaveLength(0);
    expect(processed.result).toMatchObject({ model: poseHandle.ref, detector: detectorHandle.ref, imageWidth: 64, imageHeight: 48 });
  });

  it.each([
    ["UNSPECIFIED with client boxes: the boxes", PersonSource.UNSPECIFIED, [{ x: 1, y: 2, width: 3, height: 4 }], true, 0, [{ x: 1, y: 2, width: 3, height: 4 }]],
    ["UNSPECIFIED without boxes: the detector", PersonSource.UNSPECIFIED, [], true, 1, detected.boxes.map(({ x, y, width, height }) => ({ x, y, width, height }))],
    ["UNSPECIFIED without boxes or a detector serving: the whole frame", PersonSource.UNSPECIFIED, [], false, 0, []],
    ["DETECTOR ignores the client's boxes", PersonSource.DETECTOR, [{ x: 1, y: 2, width: 3, height: 4 }], true, 1, detected.boxes.map(({ x, y, width, height }) => ({ x, y, width, height }))],
    ["WHOLE_FRAME ignores boxes and detector", PersonSource.WHOLE_FRAME, [{ x: 1, y: 2, width: 3, height: 4 }], true, 0, []],
    ["CLIENT_BOXES uses only the boxes", PersonSource.CLIENT_BOXES, [{ x: 1, y: 2, width: 3, height: 4 }], true, 0, [{ x: 1, y: 2, width: 3, height: 4 }]],
  ] as const)("%s", async (_, personSource, boxes, serving, detections, poseBoxes) => {
    const poseJobs: FrameJob[] = [];
    const detectionJobs: DetectionJob[] = [];
    const processor = new FrameProcessor(poseLane(poseJobs), { limits, frameTraceRatio: 0, modelName: "demo", detector: detectorStage(detectionJobs, detected, serving) });
    const observed: FrameJob[] = [];
    const processed = await processor.process(frame([...boxes]), settings({ personSource }), call, (job) => observed.push(job));
    expect(processed.ok).toBe(true);
    expect(detectionJobs).toHaveLength(detections);
    expect(poseJobs[0]?.boxes).toEqual(poseBoxes);
    // A trial's copy gets the very job the answer's pose batch got: the same crops of the same pixels.
    expect(observed).toHaveLength(1);
    expect(observed[0]).toBe(poseJobs[0]);
    expect(processed.result.detector === undefined).toBe(detections === 0);
  });

  it("answers CLIENT_BOXES without boxes with nobody, and DETECTOR without a detector serving with FAILED_PRECONDITION", async () => {
    const poseJobs: FrameJob[] = [];
    const processor = new FrameProcessor(poseLane(poseJobs), { limits, frameTraceRatio: 0, modelName: "demo", detector: detectorStage([], detected, false) });
    const nobody = await processor.process(frame(), settings({ personSource: PersonSource.CLIENT_BOXES }), call);
    expect(nobody.ok).toBe(true);
    expect(nobody.estimates).toEqual([]);
    const refused = await processor.process(frame(), settings({ personSource: PersonSource.DETECTOR }), call);
    expect(refused.ok).toBe(false);
    expect(refused.result.status?.code).toBe(Code.FAILED_PRECONDITION);
    expect(poseJobs).toHaveLength(0);
  });

  it("fails a frame the detector's worker could not decode with its status, without a pose batch", async () => {
    const poseJobs: FrameJob[] = [];
    const failed: DetectionOutcome = { ok: false, code: Code.INVALID_ARGUMENT, message: "the image is truncated", timings };
    const processor = new FrameProcessor(poseLane(poseJobs), { limits, frameTraceRatio: 0, modelName: "demo", detector: detectorStage([], failed) });
    const processed = await processor.process(frame(), settings({ personSource: PersonSource.DETECTOR }), call);
    expect(processed.result.status).toMatchObject({ code: Code.INVALID_ARGUMENT, message: "the image is truncated" });
    expect(poseJobs).toHaveLength(0);
  });
});
