import type { CocoKeypointDetection, CocoKeypointGroundTruth } from "../coco-keypoint-eval.js";
import { seededRandom } from "./seeded-random.js";

export interface SyntheticCocoCase {
  readonly images: number[];
  readonly groundTruths: CocoKeypointGroundTruth[];
  readonly detections: CocoKeypointDetection[];
}

/**
 * A random COCO keypoint dataset with the situations evaluation must get right: images without people,
 * crowd regions, GTs with num_keypoints 0, areas on the range boundaries, tied scores, near and far
 * detections, false positives and images with more than 20 detections. Deterministic per seed.
 */
export function syntheticCocoCase(seed: number, numKeypoints = 17): SyntheticCocoCase {
  const random = seededRandom(seed);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
  const images: number[] = [];
  while (images.length < 1 + Math.floor(random() * 12)) {
    const id = 1 + Math.floor(random() * 199);
    if (!images.includes(id)) images.push(id);
  }
  const tiedScores = Array.from({ length: 6 }, () => Math.round(random() * 100) / 100);
  const score = (): number => (random() < 0.4 ? pick(tiedScores) : random());
  const groundTruths: CocoKeypointGroundTruth[] = [];
  const detections: CocoKeypointDetection[] = [];
  for (const image of images) {
    const people = pick([0, 0, 1, 2, 3, 5]);
    for (let p = 0; p < people; p++) {
      const w = pick([10, 30, 50, 80, 120, 200]) * (0.5 + random());
      const h = w * (1 + random());
      const x = random() * 300;
      const y = random() * 200;
      const keypoints: number[] = [];
      let labelled = 0;
      for (let j = 0; j < numKeypoints; j++) {
        const v = random() > 0.1 ? pick([0, 1, 2, 2, 2]) : 0;
        if (v > 0) {
          keypoints.push(x + random() * w, y + random() * h, v);
          labelled++;
        } else {
          keypoints.push(0, 0, 0);
        }
      }
      const crowd = random() < 0.08 ? 1 : 0;
      const numKeypointsField = random() < 0.08 ? 0 : labelled;
      let area = w * h * pick([0.3, 0.5, 0.7, 1.0]);
      if (random() < 0.1) area = pick([1024, 9216, 1023.5, 9216.5]);
      groundTruths.push({
        id: groundTruths.length + 1,
        image_id: image,
        category_id: 1,
        keypoints,
        num_keypoints: numKeypointsField,
        area,
        bbox: [x, y, w, h],
        iscrowd: crowd,
      });
      const copies = pick([0, 1, 1, 2, 3]);
      for (let c = 0; c < copies; c++) {
        const noise = (pick([0.5, 2, 5, 10, 20]) * Math.sqrt(area)) / 40;
        const detected: number[] = [];
        for (let j = 0; j < numKeypoints; j++) {
          let gx = keypoints[3 * j] as number;
          let gy = keypoints[3 * j + 1] as number;
          if (keypoints[3 * j + 2] === 0) {
            gx = x + random() * w;
            gy = y + random() * h;
          }
          detected.push(gx + gaussian(random) * noise, gy + gaussian(random) * noise, random());
        }
        detections.push({ image_id: image, category_id: 1, keypoints: detected, score: score() });
      }
    }
    const falsePositives = pick([0, 0, 1, 3, random() < 0.15 ? 25 : 0]);
    for (let f = 0; f < falsePositives; f++) {
      const x = random() * 500;
      const y = random() * 400;
      const w = random() * 150 + 5;
      const detected: number[] = [];
      for (let j = 0; j < numKeypoints; j++) detected.push(x + random() * w, y + random() * w, random());
      detections.push({ image_id: image, category_id: 1, keypoints: detected, score: score() });
    }
  }
  // Detections arrive in no particular order, as results files do.
  for (let i = detections.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [detections[i], detections[j]] = [detections[j] as CocoKeypointDetection, detections[i] as CocoKeypointDetection];
  }
  return { images, groundTruths, detections };
}

function gaussian(random: () => number): number {
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Several seeds' datasets as one, image ids kept apart (seed i's ids offset by 1000 · i): a larger dataset. */
export function mergedSyntheticCocoCase(seeds: readonly number[]): SyntheticCocoCase {
  const merged: SyntheticCocoCase = { images: [], groundTruths: [], detections: [] };
  seeds.forEach((seed, i) => {
    const part = syntheticCocoCase(seed);
    const offset = 1000 * i;
    merged.images.push(...part.images.map((id) => id + offset));
    for (const gt of part.groundTruths) merged.groundTruths.push({ ...gt, id: merged.groundTruths.length + 1, image_id: gt.image_id + offset });
    for (const dt of part.detections) merged.detections.push({ ...dt, image_id: dt.image_id + offset });
  });
  return merged;
}
