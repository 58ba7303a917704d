import { readFile } from "node:fs/promises";
import { generateSyntheticDataset, readCocoKeypoints } from "@poseloop/data";
import { DecodedFrameCache, evaluateModel, evaluationSetFromCoco, PoseEstimator, servingSpecFromManifest } from "@poseloop/estimator";
import { CocoKeypointMetric, COCO17 } from "@poseloop/pose";
import { ImageFormat } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHarness, type InferencerHarness } from "./testing/harness.js";
import { buildTestModel, publishTestModel } from "./testing/test-models.js";

const natsUrl = inject("natsUrl");

describe("inferencer accuracy", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let harness: InferencerHarness;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-accuracy-");
    harness = await startHarness(natsUrl, "accuracy");
  });
  afterAll(async () => {
    await harness.close();
    await dir.remove();
  });

  it("serves exactly the keypoints and the AP that the trainer's evaluation computes for the same model", async () => {
    await generateSyntheticDataset({ dir: dir.path, split: "val", count: 12, seed: 4, width: 160, height: 120, minPeople: 1, maxPeople: 2 });
    const dataset = await readCocoKeypoints({ dir: dir.path, split: "val", schema: COCO17 });
    const set = evaluationSetFromCoco("accuracy/val", dataset);
    const model = await buildTestModel({ seed: 11 });
    const published = await publishTestModel(harness.registry, "accuracy", model);
    await harness.inferencer.models.waitForServing(20_000);

    // Trainer side: the evaluation the training run reports, on the same artifact bytes.
    const { spec } = servingSpecFromManifest(published.manifest);
    if (spec === undefined) throw new Error("the test model's manifest has no serving spec");
    const estimator = new PoseEstimator({ intraOpThreads: 1, maxPixels: 1 << 24 });
    await estimator.load(spec, model.serving);
    const trainerSide = await evaluateModel(estimator, spec.version, set, { flipTest: true });
    // A training run keeps its validation pictures decoded from one epoch to the next: the same detections
    // whether the cache is being filled or read.
    const frames = new DecodedFrameCache({ maxBytes: 1 << 26, maxPixels: 1 << 24 });
    for (let pass = 0; pass < 2; pass++) expect((await evaluateModel(estimator, spec.version, set, { flipTest: true, frames })).detections).toEqual(trainerSide.detections);
    expect(frames.bytes).toBe(12 * 160 * 120 * 3);
    await estimator.close();

    // Served: every validation image through DetectKeypoints with its ground-truth boxes.
    const metric = new CocoKeypointMetric(set.groundTruths, { images: set.images.map((i) => i.imageId) });
    const served: { image_id: number; keypoints: number[]; score: number }[] = [];
    for (const image of set.images) {
      const { result } = await harness.client.detectKeypoints({
        flipTest: true,
        minKeypointScore: 0.2,
        frame: {
          frameId: BigInt(image.imageId),
          image: { case: "encoded", value: { data: await readFile(image.imagePath), format: ImageFormat.JPEG } },
          personBoxes: image.boxes.map((b) => ({ ...b.bbox, score: b.score })),
        },
      });
      for (const person of result?.persons ?? []) {
        served.push({ image_id: image.imageId, keypoints: person.keypoints.flatMap((k) => [k.x, k.y, k.score]), score: person.score });
      }
    }
    metric.addDetections(served.map((d) => ({ ...d, category_id: 1 })));
    const servedStats = metric.compute().stats;

    expect(served).toHaveLength(trainerSide.detections.length);
    const key = (d: { image_id: number; keypoints: ArrayLike<number> }) => `${d.image_id}:${Array.from(d.keypoints).slice(0, 2).map((v) => v.toFixed(3)).join(",")}`;
    const theirs = new Map(trainerSide.detections.map((d) => [key(d), d]));
    for (const d of served) {
      const match = theirs.get(key(d));
      expect(match, `served detection ${key(d)} has a trainer-side twin`).toBeDefined();
      const expected = Array.from(match?.keypoints ?? []);
      d.keypoints.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 3));
    }
    expect(servedStats.ap).toBeCloseTo(trainerSide.stats.ap, 6);
    expect(servedStats.ap50).toBeCloseTo(trainerSide.stats.ap50, 6);
  });
});
