import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { syntheticClip, type ClipFrame, type ClipPerson } from "@poseloop/data";
import { buildTestModel, publishTestModel, startHarness, streamRequests, type InferencerHarness } from "@poseloop/inferencer/testing";
import { ModelKind, ModelRefSchema, Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { FrameSchema, PersonSource, PixelFormat, type FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { parseManifestYaml } from "@poseloop/trainer";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

// The person detector shipped in models/person-detector (trained by this project's trainer from its committed
// recipe), served by a real inferencer over gRPC with onnxruntime, on four multi-person synthetic clips: people
// walking in through the left border and out through the right one, two of them crossing. No frame carries
// boxes: the detector finds the people.

const natsUrl = inject("natsUrl");
const MODELS = fileURLToPath(new URL("../models/person-detector/", import.meta.url));
const DETECTOR = "person-detector";
const POSE = "shipped-detector-pose";

const FRAMES = 60;
/**
 * The issue's bar: at its manifest's score threshold (0.3) the detector finds 0.910 of these clips' people at IoU
 * 0.5, with 35 of its 689 boxes on nobody (docs/detector-recipe.md, "On the synthetic clips", where other clips
 * are measured too). A worse detector fails it.
 */
const MIN_RECALL = 0.9;
const MAX_FALSE_POSITIVE_RATE = 0.1;
/** The clip seeds docs/detector-recipe.md has measured every shipped detector on since the first. */
const SEEDS = [11, 77, 78, 3];
const clips: ClipFrame[][] = SEEDS.map((seed) => [...syntheticClip({ width: 256, height: 192, frames: FRAMES, seed })]);

/**
 * Who a detector must find: a person whose visible box is at least 12 frame pixels wide and 24 tall. The
 * detector predicts a center per 4 frame pixels, so a box narrower than three cells — a walker's arm or shoulder
 * at the border as they enter or leave, for a frame or two — barely has a center of its own to find; anyone
 * larger, cut by the border or half hidden by a crossing walker, must be found. The people too small to count are
 * neither misses nor, when found, false positives.
 */
function mustBeFound(person: ClipPerson): boolean {
  const [, , width, height] = person.bbox;
  return width >= 12 && height >= 24;
}

function iou(a: readonly number[], b: readonly number[]): number {
  const [ax = 0, ay = 0, aw = 0, ah = 0] = a;
  const [bx = 0, by = 0, bw = 0, bh = 0] = b;
  const w = Math.min(ax + aw, bx + bw) - Math.max(ax, bx);
  const h = Math.min(ay + ah, by + bh) - Math.max(ay, by);
  return w > 0 && h > 0 ? (w * h) / (aw * ah + bw * bh - w * h) : 0;
}

interface ClipScore {
  readonly people: number;
  readonly found: number;
  readonly detections: number;
  /** Detections that overlap nobody (not even someone too small to count) by IoU 0.5. */
  readonly falsePositives: number;
}

/**
 * Each frame's detections matched to its people as COCO matches them: best score first, each to the unmatched
 * person it overlaps most at IoU ≥ 0.5, the people who must be found before the ones too small to count.
 */
function score(clip: readonly ClipFrame[], results: readonly FrameResult[]): ClipScore {
  let people = 0;
  let found = 0;
  let detections = 0;
  let falsePositives = 0;
  results.forEach((result, i) => {
    const truth = (clip[i] as ClipFrame).people.map((person) => ({ box: person.bbox, counted: mustBeFound(person), matched: false }));
    people += truth.filter((t) => t.counted).length;
    const boxes = [...result.persons].sort((a, b) => b.score - a.score).map((p) => [p.bbox?.x ?? 0, p.bbox?.y ?? 0, p.bbox?.width ?? 0, p.bbox?.height ?? 0]);
    detections += boxes.length;
    for (const box of boxes) {
      const candidates = truth.filter((t) => !t.matched && iou(t.box, box) >= 0.5).sort((a, b) => Number(b.counted) - Number(a.counted) || iou(b.box, box) - iou(a.box, box));
      const match = candidates[0];
      if (match === undefined) {
        falsePositives++;
        continue;
      }
      match.matched = true;
      if (match.counted) found++;
    }
  });
  return { people, found, detections, falsePositives };
}

describe("the shipped person detector", () => {
  let harness: InferencerHarness;
  beforeAll(async () => {
    const [model, yaml, pose] = await Promise.all([readFile(`${MODELS}model.int8.onnx`), readFile(`${MODELS}manifest.yaml`, "utf8"), buildTestModel({ seed: 2, int8: false })]);
    const { manifest, problems } = parseManifestYaml(yaml);
    if (manifest === undefined) throw new Error(`models/person-detector/manifest.yaml: ${problems.join("; ")}`);
    expect(manifest.kind).toBe(ModelKind.DETECTOR);
    manifest.model = create(ModelRefSchema, { name: DETECTOR });
    manifest.precision = Precision.INT8;
    harness = await startHarness(natsUrl, POSE, { POSELOOP_DETECTOR_MODEL: DETECTOR });
    await publishTestModel(harness.registry, POSE, pose);
    await harness.registry.publish({
      manifest,
      files: [{ file: "model.int8.onnx", data: model, precision: Precision.INT8 }],
      servingFile: "model.int8.onnx",
      promote: true,
      setBy: "shipped-detector test",
    });
    await harness.inferencer.models.waitForServing(20_000);
    for (let i = 0; i < 200 && harness.inferencer.detectors?.current === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 50));
  });
  afterAll(async () => harness?.close());

  it("finds the clips' people at IoU 0.5 with no client boxes, and few boxes where nobody is", async () => {
    const total = { people: 0, found: 0, detections: 0, falsePositives: 0 };
    const perClip: string[] = [];
    for (const [c, clip] of clips.entries()) {
      const frames = clip.map((frame) =>
        create(FrameSchema, {
          frameId: BigInt(frame.index),
          ptsUs: BigInt(frame.ptsUs),
          image: { case: "raw", value: { width: frame.image.width, height: frame.image.height, format: PixelFormat.RGB8, data: frame.image.data } },
        }),
      );
      const results: FrameResult[] = [];
      for await (const response of harness.client.streamKeypoints(streamRequests({ personSource: PersonSource.DETECTOR, maxInFlight: 8, tracking: { enabled: true } }, frames))) {
        if (response.payload.case === "result") results.push(response.payload.value);
      }
      expect(results.map((r) => Number(r.frameId))).toEqual(clip.map((f) => f.index));
      for (const result of results) {
        expect(result.status?.code ?? 0).toBe(0);
        expect(result.detector?.name).toBe(DETECTOR);
        // Every person found carries a track id, distinct within its frame.
        const ids = result.persons.map((p) => p.trackId ?? 0);
        expect(ids.every((id) => id > 0)).toBe(true);
        expect(new Set(ids).size).toBe(ids.length);
      }
      const clipScore = score(clip, results);
      // Four walkers over 60 frames, three or four on screen at a time.
      expect(clipScore.people).toBeGreaterThan(150);
      perClip.push(`seed ${SEEDS[c]}: ${clipScore.found}/${clipScore.people} found, ${clipScore.falsePositives}/${clipScore.detections} on nobody`);
      total.people += clipScore.people;
      total.found += clipScore.found;
      total.detections += clipScore.detections;
      total.falsePositives += clipScore.falsePositives;
    }
    expect(total.found / total.people, perClip.join("; ")).toBeGreaterThanOrEqual(MIN_RECALL);
    expect(total.falsePositives, perClip.join("; ")).toBeLessThanOrEqual(Math.ceil(MAX_FALSE_POSITIVE_RATE * total.detections));
  });
});
