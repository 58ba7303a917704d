import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { syntheticClip, type ClipFrame } from "@poseloop/data";
import {
  FrameSchema,
  PersonSource,
  PixelFormat,
  TrackingMetric,
  type FrameResult,
  type StreamOptionsSchema,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { BLAZEPOSE33 } from "@poseloop/pose";
import { keypointSchemaProto } from "@poseloop/train";
import { startHarness, streamRequests, type InferencerHarness } from "./testing/harness.js";
import { buildTestModel, publishTestModel, testModelConfig } from "./testing/test-models.js";

const natsUrl = inject("natsUrl");

/** Two people crossing, one walking in, one walking out, then a cut to another shot with other people at the same places. */
const FRAMES = 48;
const CUT = 34;
const clip: ClipFrame[] = [...syntheticClip({ width: 256, height: 192, frames: FRAMES, seed: 3, sceneCutAt: CUT })];

/** Each frame as raw RGB with the clip's ground-truth boxes as the client's person boxes. */
const frames = clip.map((frame) =>
  create(FrameSchema, {
    frameId: BigInt(frame.index),
    ptsUs: BigInt(frame.ptsUs),
    image: { case: "raw", value: { width: frame.image.width, height: frame.image.height, format: PixelFormat.RGB8, data: frame.image.data } },
    personBoxes: frame.people.map(({ bbox: [x, y, width, height] }) => ({ x, y, width, height, score: 1 })),
  }),
);

/** One result person per ground-truth person, found by its box (results are ordered by score, not by box). */
interface Observation {
  readonly identity: number;
  readonly trackId: number;
  /** [x, y] per keypoint. */
  readonly keypoints: number[];
}

function observations(results: readonly FrameResult[]): Observation[][] {
  return results.map((result, i) =>
    (clip[i] as ClipFrame).people.map((person) => {
      const [x, y, width, height] = person.bbox;
      const match = result.persons.find((p) => p.bbox?.x === x && p.bbox.y === y && p.bbox.width === width && p.bbox.height === height);
      if (match === undefined) throw new Error(`frame ${i}: no result person with the box of identity ${person.identity}`);
      return { identity: person.identity, trackId: match.trackId ?? 0, keypoints: match.keypoints.flatMap((k) => [k.x, k.y]) };
    }),
  );
}

/** MOT's identity switches: a ground-truth identity matched to another track id than the last time it was seen. */
function identitySwitches(frames: readonly Observation[][]): number {
  const last = new Map<number, number>();
  let switches = 0;
  for (const frame of frames) {
    for (const { identity, trackId } of frame) {
      const before = last.get(identity);
      if (before !== undefined && before !== trackId) switches++;
      last.set(identity, trackId);
    }
  }
  return switches;
}

/**
 * Mean |p(t+1) − 2p(t) + p(t−1)| over every keypoint of every identity seen in three consecutive frames of one
 * shot: the clip's people walk at constant speed, so this is what a viewer sees as shaking.
 */
function jitter(frames: readonly Observation[][]): number {
  let sum = 0;
  let n = 0;
  for (let t = 1; t + 1 < frames.length; t++) {
    if (t === CUT || t + 1 === CUT) continue;
    for (const now of frames[t] as Observation[]) {
      const before = frames[t - 1]?.find((o) => o.identity === now.identity);
      const after = frames[t + 1]?.find((o) => o.identity === now.identity);
      if (before === undefined || after === undefined) continue;
      for (let j = 0; j < now.keypoints.length; j += 2) {
        const ax = (after.keypoints[j] as number) - 2 * (now.keypoints[j] as number) + (before.keypoints[j] as number);
        const ay = (after.keypoints[j + 1] as number) - 2 * (now.keypoints[j + 1] as number) + (before.keypoints[j + 1] as number);
        sum += Math.hypot(ax, ay);
        n++;
      }
    }
  }
  return sum / n;
}

describe("tracking and smoothing over StreamKeypoints", () => {
  let harness: InferencerHarness;
  beforeAll(async () => {
    harness = await startHarness(natsUrl, "tracking");
    await publishTestModel(harness.registry, "tracking", await buildTestModel({ seed: 5 }));
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => {
    await harness.close();
  });

  async function stream(options: MessageInitShape<typeof StreamOptionsSchema>): Promise<Observation[][]> {
    const results: FrameResult[] = [];
    for await (const response of harness.client.streamKeypoints(streamRequests({ personSource: PersonSource.CLIENT_BOXES, maxInFlight: 8, ...options }, frames))) {
      if (response.payload.case === "result") results.push(response.payload.value);
    }
    expect(results.map((r) => Number(r.frameId))).toEqual(clip.map((f) => f.index));
    for (const result of results) expect(result.status?.code ?? 0).toBe(0);
    return observations(results);
  }

  it("keeps each person's track id through a crossing, an entrance and an exit, and restarts every track at a scene cut", async () => {
    const tracked = await stream({ tracking: { enabled: true, metric: TrackingMetric.IOU } });
    // Two people (identities 1 and 2) cross mid-shot, their boxes overlapping for several frames.
    const crossing = tracked.map((frame) => frame.filter((o) => o.identity === 1 || o.identity === 2));
    expect(identitySwitches(crossing)).toBeLessThanOrEqual(1);
    // Whoever walks in or out through the border is a sliver of a few pixels there, whose box overlaps the next
    // frame's too little for IoU matching: at most one switch each for the two people who do.
    expect(identitySwitches(tracked)).toBeLessThanOrEqual(2);
    // Every person has a track id, distinct within a frame.
    for (const frame of tracked) {
      expect(frame.every((o) => o.trackId > 0)).toBe(true);
      expect(new Set(frame.map((o) => o.trackId)).size).toBe(frame.length);
    }
    const idsBefore = new Set(tracked.slice(0, CUT).flatMap((frame) => frame.map((o) => o.trackId)));
    const idsAfter = new Set(tracked.slice(CUT).flatMap((frame) => frame.map((o) => o.trackId)));
    expect([...idsAfter].filter((id) => idsBefore.has(id))).toEqual([]);

    // The people after the cut stand where the ones before it stood: without the cut test, their boxes
    // alone would hand them the old ids.
    const uncut = await stream({ tracking: { enabled: true, metric: TrackingMetric.IOU, sceneCutThreshold: 1 } });
    const carried = new Set(uncut.slice(CUT).flatMap((frame) => frame.map((o) => o.trackId)));
    const before = new Set(uncut.slice(0, CUT).flatMap((frame) => frame.map((o) => o.trackId)));
    expect([...carried].filter((id) => before.has(id)).length).toBeGreaterThan(0);
  });

  it("One-Euro smoothing steadies the keypoints of each track", async () => {
    const raw = await stream({ tracking: { enabled: true } });
    const smoothed = await stream({ tracking: { enabled: true }, smoothing: { enabled: true, minCutoff: 1, beta: 0.007 } });
    // The same people get the same tracks either way; only the keypoints differ.
    expect(identitySwitches(smoothed)).toBe(identitySwitches(raw));
    const [before, after] = [jitter(raw), jitter(smoothed)];
    expect(before).toBeGreaterThan(0.5);
    expect(after).toBeLessThan(0.6 * before);
  });
});

describe("OKS tracking of a model of another keypoint schema", () => {
  let harness: InferencerHarness;
  beforeAll(async () => {
    harness = await startHarness(natsUrl, "tracking-blazepose");
    const model = await buildTestModel({ seed: 5, config: { ...testModelConfig(), numKeypoints: 33 } });
    await publishTestModel(harness.registry, "tracking-blazepose", model, { editManifest: (manifest) => (manifest.keypointSchema = keypointSchemaProto(BLAZEPOSE33)) });
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => {
    await harness.close();
  });

  it("tracks and smooths a BlazePose-33 model's people by OKS with its schema's sigmas", async () => {
    const results: FrameResult[] = [];
    const options = { personSource: PersonSource.CLIENT_BOXES, maxInFlight: 8, tracking: { enabled: true, metric: TrackingMetric.OKS, matchThreshold: 0.05 }, smoothing: { enabled: true } };
    for await (const response of harness.client.streamKeypoints(streamRequests(options, frames))) {
      if (response.payload.case === "result") results.push(response.payload.value);
    }
    expect(results.map((r) => Number(r.frameId))).toEqual(clip.map((f) => f.index));
    for (const result of results) {
      expect(result.status?.code ?? 0).toBe(0);
      expect(result.persons.every((p) => p.keypoints.length === 33)).toBe(true);
      const ids = result.persons.map((p) => p.trackId ?? 0);
      expect(ids.every((id) => id > 0)).toBe(true);
      expect(new Set(ids).size).toBe(ids.length);
    }
    // Tracks carry over from frame to frame: far fewer ids than people seen.
    const people = results.reduce((n, r) => n + r.persons.length, 0);
    const ids = new Set(results.flatMap((r) => r.persons.map((p) => p.trackId ?? 0)));
    expect(ids.size, `${ids.size} track ids for ${people} people`).toBeLessThan(people / 4);
  });
});
