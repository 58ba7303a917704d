import { describe, expect, it } from "vitest";
import {
  COCO17,
  COCO_RECALL_THRESHOLDS,
  CocoKeypointMetric,
  evaluateKeypoints,
  keypointOks,
  type CocoKeypointDetection,
  type CocoKeypointGroundTruth,
  type CocoKeypointStats,
} from "@poseloop/pose";
import { mergedSyntheticCocoCase, syntheticCocoCase } from "./testing/synthetic-coco.js";

const K = 17;
const STAT_NAMES = ["ap", "ap50", "ap75", "apMedium", "apLarge", "ar", "ar50", "ar75", "arMedium", "arLarge"] as const;
// pycocotools' precision for a first detection that is a true positive: tp / (tp + fp + ε) with ε = 2⁻⁵².
const ONE_OVER_ONE_PLUS_EPS = 1 / (1 + 2 ** -52);

/** A person's 17 labelled keypoints spread over a box at (x, y) of the given size. */
function labelledPerson(x: number, y: number, width: number, height: number): number[] {
  const keypoints: number[] = [];
  for (let j = 0; j < K; j++) keypoints.push(x + ((j * 7) % 17) * (width / 17), y + j * (height / 17), 2);
  return keypoints;
}

function groundTruth(id: number, imageId: number, keypoints: number[], area: number, extra: Partial<CocoKeypointGroundTruth> = {}): CocoKeypointGroundTruth {
  const xs = keypoints.filter((_, i) => i % 3 === 0);
  const ys = keypoints.filter((_, i) => i % 3 === 1);
  const x0 = Math.min(...xs);
  const y0 = Math.min(...ys);
  return {
    id,
    image_id: imageId,
    category_id: 1,
    keypoints,
    num_keypoints: keypoints.filter((_, i) => i % 3 === 2).filter((v) => v > 0).length,
    area,
    bbox: [x0, y0, Math.max(...xs) - x0, Math.max(...ys) - y0],
    iscrowd: 0,
    ...extra,
  };
}

/** A detection at the GT's keypoints, each moved by (dx, dy). */
function detectionOf(gt: CocoKeypointGroundTruth, score: number, dx = 0, dy = 0): CocoKeypointDetection {
  const keypoints = Array.from(gt.keypoints, (v, i) => (i % 3 === 0 ? v + dx : i % 3 === 1 ? v + dy : 0.9));
  return { image_id: gt.image_id, category_id: 1, keypoints, score };
}

describe("evaluateKeypoints: hand-made cases", () => {
  it("gives AP and AR 1 for perfect predictions, and −1 for an area range without people", () => {
    const gts = [groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000), groundTruth(2, 2, labelledPerson(50, 20, 120, 240), 28800)];
    const { stats } = evaluateKeypoints(gts, gts.map((gt) => detectionOf(gt, 0.9)));
    expect(stats).toEqual({ ap: 1, ap50: 1, ap75: 1, apMedium: -1, apLarge: 1, ar: 1, ar50: 1, ar75: 1, arMedium: -1, arLarge: 1 });
  });

  it("gives a single perfect detection 1/(1 + 2⁻⁵²), as pycocotools' ε makes it", () => {
    const gt = groundTruth(1, 1, labelledPerson(0, 0, 40, 60), 2000);
    const { stats } = evaluateKeypoints([gt], [detectionOf(gt, 0.5)]);
    expect(stats.ap).toBe(ONE_OVER_ONE_PLUS_EPS);
    expect(stats.apMedium).toBe(ONE_OVER_ONE_PLUS_EPS);
    expect(stats.apLarge).toBe(-1);
    expect(stats.ar).toBe(1);
  });

  it("matches a shifted prediction only at the OKS thresholds its hand-computed OKS reaches", () => {
    // One keypoint with σ = 0.1 on an area of 10,000 px²: OKS = exp(−d² / (2σ)² / area / 2) = exp(−d² / 800).
    const sigmas = [0.1];
    const gts = [1, 2].map((image) => ({ id: image, image_id: image, keypoints: [100, 100, 2], num_keypoints: 1, area: 10000, bbox: [90, 90, 20, 20], iscrowd: 0 }));
    const dets = gts.map((gt) => ({ image_id: gt.image_id, keypoints: [116, 100, 1], score: 0.8 }));
    expect(keypointOks(dets[0]?.keypoints ?? [], gts[0] as CocoKeypointGroundTruth, sigmas)).toBeCloseTo(Math.exp(-256 / 800), 15);
    // exp(−0.32) = 0.726: a match at OKS .50, .55, .60, .65, .70 and none from .75 on.
    const { stats } = evaluateKeypoints(gts, dets, undefined, { sigmas });
    expect(stats).toEqual({ ap: 0.5, ap50: 1, ap75: 0, apMedium: -1, apLarge: 0.5, ar: 0.5, ar50: 1, ar75: 0, arMedium: -1, arLarge: 0.5 });
  });

  it("measures OKS to the doubled box for a GT without labelled keypoints", () => {
    const gt = { keypoints: new Array<number>(3 * K).fill(0), area: 400, bbox: [100, 100, 20, 20] };
    const inside = Array.from({ length: K }, () => [90, 130, 1]).flat();
    expect(keypointOks(inside, gt, COCO17.sigmas)).toBe(1);
    // Every keypoint 10 px left of the doubled box's left edge (x0 = 100 − 20 = 80).
    const outside = Array.from({ length: K }, () => [70, 110, 1]).flat();
    const expected = COCO17.sigmas.reduce((sum, s) => sum + Math.exp(-100 / (2 * s) ** 2 / 400 / 2), 0) / K;
    expect(keypointOks(outside, gt, COCO17.sigmas)).toBeCloseTo(expected, 14);
  });

  it("ignores detections that fall on a crowd region instead of counting them as false positives", () => {
    const people = [groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000), groundTruth(2, 1, labelledPerson(300, 10, 100, 200), 20000)];
    const crowd = groundTruth(3, 1, labelledPerson(500, 300, 60, 60).map((v) => v * 0), 3600, { bbox: [500, 300, 60, 60], iscrowd: 1, num_keypoints: 0 });
    const inCrowd = { image_id: 1, keypoints: Array.from({ length: K }, (_, j) => [510 + j, 320, 0.9]).flat(), score: 0.99 };
    const dets = [inCrowd, inCrowd, ...people.map((gt) => detectionOf(gt, 0.9))];
    expect(evaluateKeypoints([...people, crowd], dets).stats.ap).toBe(1);
    // Without the crowd region the same two detections are false positives ranked first.
    const { stats } = evaluateKeypoints(people, dets);
    expect(stats.ap).toBeCloseTo(0.5, 12);
  });

  it("ignores a GT with num_keypoints 0 and the detection that matches it", () => {
    const person = groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000);
    const other = groundTruth(2, 2, labelledPerson(10, 10, 100, 200), 20000);
    const unlabelled = { ...groundTruth(3, 1, labelledPerson(300, 10, 100, 200), 20000), num_keypoints: 0 };
    const dets = [detectionOf(unlabelled, 0.99), detectionOf(person, 0.9), detectionOf(other, 0.8)];
    expect(evaluateKeypoints([person, other, unlabelled], dets).stats.ap).toBe(1);
    // Alone it leaves nothing to measure.
    expect(evaluateKeypoints([unlabelled], [detectionOf(unlabelled, 0.99)]).stats).toEqual(
      Object.fromEntries(STAT_NAMES.map((name) => [name, -1])) as unknown as CocoKeypointStats,
    );
  });

  it("counts a detection on an image without people as a false positive", () => {
    const gts = [groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000), groundTruth(2, 2, labelledPerson(10, 10, 100, 200), 20000)];
    const stray = { image_id: 3, keypoints: labelledPerson(10, 10, 100, 200).map((v, i) => (i % 3 === 2 ? 0.9 : v)), score: 0.95 };
    const dets = [stray, detectionOf(gts[0] as CocoKeypointGroundTruth, 0.9), detectionOf(gts[1] as CocoKeypointGroundTruth, 0.8)];
    // Ranked FP, TP, TP: precision 0, 1/2, 2/3 → envelope 2/3 at every recall.
    const { stats, imageIds } = evaluateKeypoints(gts, dets, [1, 2, 3, 4]);
    expect(imageIds).toEqual([1, 2, 3, 4]);
    expect(stats.ap).toBeCloseTo(2 / 3, 14);
    expect(stats.ar).toBe(1);
    // An image listed without people and without detections changes nothing.
    expect(evaluateKeypoints(gts, dets.slice(1), [1, 2, 3, 4]).stats.ap).toBe(1);
  });

  it("counts a duplicate detection of a matched person as a false positive", () => {
    const a = groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000);
    const b = groundTruth(2, 2, labelledPerson(10, 10, 100, 200), 20000);
    const dets = [detectionOf(a, 0.95), detectionOf(a, 0.9, 1, 1), detectionOf(b, 0.5)];
    // Ranked TP, FP, TP: precision 1/(1+ε), 1/2, 2/3 at recall 1/2, 1/2, 1; the recall points 0 … 0.50 see
    // the first precision, 0.51 … 1 see 2/3.
    const perThreshold = (51 * ONE_OVER_ONE_PLUS_EPS + 50 * (2 / 3)) / 101;
    const { stats } = evaluateKeypoints([a, b], dets);
    expect(stats.ap).toBeCloseTo(perThreshold, 14);
    expect(stats.ar).toBe(1);
  });

  it("keeps only the 20 highest-scoring detections of an image", () => {
    const gt = groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000);
    const strays = Array.from({ length: 20 }, (_, i) => ({ image_id: 1, keypoints: labelledPerson(400 + i, 300, 50, 50), score: 0.9 - i * 0.01 }));
    const dets = [...strays, detectionOf(gt, 0.1)];
    const truncated = evaluateKeypoints([gt], dets);
    expect(truncated.stats.ap).toBe(0);
    expect(truncated.stats.ar).toBe(0);
    expect(truncated.numDetections).toBe(20);
    const widened = evaluateKeypoints([gt], dets, undefined, { maxDetections: 21 });
    expect(widened.stats.ar).toBe(1);
    expect(widened.stats.ap).toBeCloseTo(1 / 21, 14);
  });

  it("ranks tied scores by image id, then input order within the image", () => {
    const a = groundTruth(1, 5, labelledPerson(10, 10, 100, 200), 20000);
    const b = groundTruth(2, 7, labelledPerson(10, 10, 100, 200), 20000);
    const miss = { image_id: 7, keypoints: labelledPerson(400, 300, 100, 200).map((v, i) => (i % 3 === 2 ? 0.5 : v)), score: 0.5 };
    // All tied at 0.5: image 5's TP, then image 7's miss (listed first), then its TP → precision 1, 1/2, 2/3.
    const first = evaluateKeypoints([a, b], [miss, detectionOf(b, 0.5), detectionOf(a, 0.5)]);
    expect(first.stats.ap).toBeCloseTo((51 * ONE_OVER_ONE_PLUS_EPS + 50 * (2 / 3)) / 101, 14);
    // Image 7's TP listed before its miss: TP, TP, FP → AP 1.
    expect(evaluateKeypoints([a, b], [detectionOf(b, 0.5), miss, detectionOf(a, 0.5)]).stats.ap).toBe(1);
  });

  it("splits people by area into medium and large", () => {
    const medium = groundTruth(1, 1, labelledPerson(10, 10, 40, 60), 50 * 50);
    const large = groundTruth(2, 1, labelledPerson(300, 10, 100, 200), 200 * 100);
    const { stats } = evaluateKeypoints([medium, large], [detectionOf(large, 0.9)]);
    expect(stats.apLarge).toBe(ONE_OVER_ONE_PLUS_EPS);
    expect(stats.arLarge).toBe(1);
    expect(stats.apMedium).toBe(0);
    expect(stats.arMedium).toBe(0);
    expect(stats.ar).toBe(0.5);
  });

  it("reports 0 with people but no detections, and −1 with no people at all", () => {
    const gt = groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000);
    expect(evaluateKeypoints([gt], []).stats.ap).toBe(0);
    expect(evaluateKeypoints([], []).stats.ap).toBe(-1);
  });

  it("refuses NaN keypoints, short keypoint arrays and detections on images outside the evaluated ones", () => {
    const gt = groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000);
    const bad = detectionOf(gt, 0.9);
    expect(() => evaluateKeypoints([gt], [{ ...bad, keypoints: Array.from(bad.keypoints).fill(Number.NaN, 0, 1) }])).toThrow(RangeError);
    expect(() => evaluateKeypoints([gt], [{ ...bad, keypoints: [1, 2, 3] }])).toThrow(/51 values/);
    expect(() => evaluateKeypoints([gt], [{ ...bad, image_id: 9 }], [1])).toThrow(/not among the evaluated images/);
  });
});

describe("evaluateKeypoints against pycocotools", () => {
  // Stats printed by pycocotools 2.0.11 (COCOeval, iouType 'keypoints', numpy 2.4) for these synthetic
  // datasets, regenerated here from their seeds.
  const golden: [string, () => ReturnType<typeof syntheticCocoCase>, number[]][] = [
    ["seed 3", () => syntheticCocoCase(3), [0.27446744674467444, 0.6066606660666066, 0.1914191419141914, 0.5709570957095709, 0.10099009900990097, 0.6285714285714284, 0.8571428571428571, 0.5714285714285714, 0.8, 0.1]],
    ["seed 8", () => syntheticCocoCase(8), [0.07007787882860685, 0.2056583486402939, 0.06263160252676853, 0.049500450045004495, 0.09616799042541616, 0.3727272727272727, 0.5454545454545454, 0.36363636363636365, 0.24000000000000005, 0.42000000000000004]],
    ["seed 10 (small people only)", () => syntheticCocoCase(10), [0.29999999999999993, 0.3333333333333334, 0.3333333333333334, -1, -1, 0.9, 1, 1, -1, -1]],
    ["seed 11", () => syntheticCocoCase(11), [0.2030375978774348, 0.3809211803533294, 0.11386138613861387, 0.36273927392739275, -1, 0.5333333333333333, 0.6666666666666666, 0.5, 0.55, -1]],
    [
      "150 seeds merged (1,166 people, 2,750 detections)",
      () => mergedSyntheticCocoCase(Array.from({ length: 150 }, (_, i) => 1000 + i)),
      [0.0806890411124405, 0.13732263726687238, 0.08462242498431644, 0.07431654514572439, 0.06495094009280254, 0.4108247422680412, 0.5412371134020618, 0.4381443298969072, 0.40502645502645507, 0.38885448916408666],
    ],
  ];
  it.each(golden)("reproduces COCOeval's ten numbers bit for bit: %s", (_, make, expected) => {
    const { images, groundTruths, detections } = make();
    const { stats } = evaluateKeypoints(groundTruths, detections, images);
    expect(STAT_NAMES.map((name) => stats[name])).toEqual(expected);
  });
});

/**
 * An independent implementation of the published COCO keypoint evaluation, written for this test from the
 * definition rather than from the library: one global ranking of all detections, matching per threshold,
 * interpolated precision as "the best precision at any recall ≥ r", plain sums.
 */
function referenceStats(gts: readonly CocoKeypointGroundTruth[], dets: readonly CocoKeypointDetection[], images: readonly number[]): number[] {
  const sigmas = COCO17.sigmas;
  const thresholds = Array.from({ length: 10 }, (_, i) => (i === 9 ? 0.95 : 0.5 + i * (0.45 / 9)));
  const areaRanges = [[0, 1e10], [1024, 9216], [9216, 1e10]] as const;
  const oks = (dt: CocoKeypointDetection, gt: CocoKeypointGroundTruth): number => {
    let total = 0;
    let count = 0;
    const anyLabelled = Array.from({ length: K }, (_, j) => (gt.keypoints[3 * j + 2] as number) > 0).some(Boolean);
    const [bx, by, bw, bh] = Array.from(gt.bbox);
    for (let j = 0; j < K; j++) {
      const xd = dt.keypoints[3 * j] as number;
      const yd = dt.keypoints[3 * j + 1] as number;
      let d2: number;
      if (anyLabelled) {
        if (!((gt.keypoints[3 * j + 2] as number) > 0)) continue;
        d2 = (xd - (gt.keypoints[3 * j] as number)) ** 2 + (yd - (gt.keypoints[3 * j + 1] as number)) ** 2;
      } else {
        const ddx = Math.max(0, bx! - bw! - xd) + Math.max(0, xd - (bx! + 2 * bw!));
        const ddy = Math.max(0, by! - bh! - yd) + Math.max(0, yd - (by! + 2 * bh!));
        d2 = ddx * ddx + ddy * ddy;
      }
      total += Math.exp(-d2 / (2 * sigmas[j]!) ** 2 / (gt.area + 2 ** -52) / 2);
      count++;
    }
    return total / count;
  };
  const sortedImages = [...new Set(images)].sort((a, b) => a - b);
  // Each image's detections, best first, ties in input order, at most 20.
  const topDetections = new Map(
    sortedImages.map((image) => [
      image,
      dets
        .map((dt, order) => ({ dt, order }))
        .filter(({ dt }) => dt.image_id === image)
        .sort((p, q) => q.dt.score - p.dt.score || p.order - q.order)
        .slice(0, 20)
        .map(({ dt }) => dt),
    ]),
  );
  const precisionMeans: number[][] = [];
  const recalls: number[][] = [];
  for (const [low, high] of areaRanges) {
    const perThresholdPrecision: number[][] = [];
    const perThresholdRecall: number[] = [];
    const imageGts = new Map(sortedImages.map((image) => [image, gts.filter((gt) => gt.image_id === image)]));
    const isIgnored = (gt: CocoKeypointGroundTruth): boolean => Boolean(gt.iscrowd) || gt.num_keypoints === 0 || gt.area < low || gt.area > high;
    const regularCount = [...imageGts.values()].flat().filter((gt) => !isIgnored(gt)).length;
    for (const threshold of thresholds) {
      type Outcome = { score: number; image: number; rank: number; tp: boolean; ignore: boolean };
      const outcomes: Outcome[] = [];
      for (const image of sortedImages) {
        const candidates = [...(imageGts.get(image) ?? [])].sort((p, q) => Number(isIgnored(p)) - Number(isIgnored(q)));
        const taken = new Set<CocoKeypointGroundTruth>();
        (topDetections.get(image) ?? []).forEach((dt, rank) => {
          let best: CocoKeypointGroundTruth | undefined;
          let bestOks = threshold;
          for (const gt of candidates) {
            if (taken.has(gt) && !gt.iscrowd) continue;
            if (best !== undefined && !isIgnored(best) && isIgnored(gt)) break;
            const value = oks(dt, gt);
            if (value >= bestOks) {
              bestOks = value;
              best = gt;
            }
          }
          if (best !== undefined) taken.add(best);
          const xs = Array.from({ length: K }, (_, j) => dt.keypoints[3 * j] as number);
          const ys = Array.from({ length: K }, (_, j) => dt.keypoints[3 * j + 1] as number);
          const area = (Math.max(...xs) - Math.min(...xs)) * (Math.max(...ys) - Math.min(...ys));
          const ignore = best !== undefined ? isIgnored(best) : area < low || area > high;
          outcomes.push({ score: dt.score, image, rank, tp: best !== undefined, ignore });
        });
      }
      outcomes.sort((p, q) => q.score - p.score || p.image - q.image || p.rank - q.rank);
      const points: { recall: number; precision: number }[] = [];
      let tp = 0;
      let fp = 0;
      // Ignored detections repeat the previous point, as the cumulative sums do.
      for (const outcome of outcomes) {
        if (!outcome.ignore) {
          if (outcome.tp) tp++;
          else fp++;
        }
        points.push({ recall: tp / regularCount, precision: tp / (tp + fp + 2 ** -52) });
      }
      perThresholdRecall.push(points.length > 0 ? points[points.length - 1]!.recall : 0);
      perThresholdPrecision.push(
        COCO_RECALL_THRESHOLDS.map((r) => {
          const reaching = points.filter((p) => p.recall >= r).map((p) => p.precision);
          return reaching.length > 0 ? Math.max(...reaching) : 0;
        }),
      );
    }
    const hasPeople = regularCount > 0;
    precisionMeans.push(hasPeople ? perThresholdPrecision.map((row) => row.reduce((s, v) => s + v, 0) / row.length) : []);
    recalls.push(hasPeople ? perThresholdRecall : []);
  }
  const mean = (values: number[]): number => (values.length === 0 ? -1 : values.reduce((s, v) => s + v, 0) / values.length);
  const at = (values: number[], index: number): number[] => (values.length === 0 ? [] : [values[index]!]);
  const [all, medium, large] = [0, 1, 2].map((a) => precisionMeans[a]!);
  const [rAll, rMedium, rLarge] = [0, 1, 2].map((a) => recalls[a]!);
  return [mean(all!), mean(at(all!, 0)), mean(at(all!, 5)), mean(medium!), mean(large!), mean(rAll!), mean(at(rAll!, 0)), mean(at(rAll!, 5)), mean(rMedium!), mean(rLarge!)];
}

describe("evaluateKeypoints against an independent implementation", () => {
  it.each(Array.from({ length: 40 }, (_, i) => 500 + i))("agrees to 1e-9 on random dataset %i", (seed) => {
    const { images, groundTruths, detections } = syntheticCocoCase(seed);
    const expected = referenceStats(groundTruths, detections, images);
    const { stats } = evaluateKeypoints(groundTruths, detections, images);
    STAT_NAMES.forEach((name, i) => expect(stats[name], name).toBeCloseTo(expected[i]!, 9));
  });
});

describe("CocoKeypointMetric", () => {
  it("gives the same numbers fed batch by batch as evaluateKeypoints over everything", () => {
    const { images, groundTruths, detections } = mergedSyntheticCocoCase([21, 22, 23, 24]);
    const metric = new CocoKeypointMetric(groundTruths, { images });
    for (let i = 0; i < detections.length; i += 7) {
      // The trainer reuses its buffers: the metric must copy what it is given.
      const batch = detections.slice(i, i + 7).map((dt) => ({ ...dt, keypoints: Float32Array.from(dt.keypoints) }));
      metric.addDetections(batch);
      for (const dt of batch) dt.keypoints.fill(0);
    }
    const whole = evaluateKeypoints(
      groundTruths,
      detections.map((dt) => ({ ...dt, keypoints: Array.from(Float32Array.from(dt.keypoints)) })),
      images,
    );
    expect(metric.compute().stats).toEqual(whole.stats);
    metric.reset();
    expect(metric.numDetections).toBe(0);
    expect(metric.compute().stats.ap).toBe(0);
  });

  it("removes duplicate poses with OKS-NMS before evaluating when asked", () => {
    const gts = [groundTruth(1, 1, labelledPerson(10, 10, 100, 200), 20000), groundTruth(2, 2, labelledPerson(10, 10, 100, 200), 20000)];
    const dets = [detectionOf(gts[0]!, 0.9), detectionOf(gts[0]!, 0.95, 1, 0), detectionOf(gts[1]!, 0.5)];
    expect(new CocoKeypointMetric(gts).compute().stats.ap).toBe(0);
    const plain = new CocoKeypointMetric(gts);
    plain.addDetections(dets);
    expect(plain.compute().stats.ap).toBeLessThan(1);
    const suppressed = new CocoKeypointMetric(gts, { oksNmsThreshold: 0.9 });
    suppressed.addDetections(dets);
    expect(suppressed.compute().stats.ap).toBe(1);
  });
});
