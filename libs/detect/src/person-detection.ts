/** One detected person: a box (x1, y1) top-left to (x2, y2) bottom-right, in pixels, and its score in [0, 1]. */
export interface PersonDetection {
  readonly x1: number;
  readonly y1: number;
  readonly x2: number;
  readonly y2: number;
  readonly score: number;
}

/** Intersection over union of two boxes; 0 when they do not overlap or both are empty. */
export function detectionIou(a: PersonDetection, b: PersonDetection): number {
  const width = Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1);
  const height = Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1);
  if (width <= 0 || height <= 0) return 0;
  const intersection = width * height;
  const union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - intersection;
  return union > 0 ? intersection / union : 0;
}

/**
 * Greedy non-maximum suppression: the highest-scoring box is kept and every box overlapping it by more than
 * `iouThreshold` dropped, then the next, until `maxDetections` are kept. Ties keep the earlier box, so equal
 * inputs give equal outputs. Returns a new array, best first.
 */
export function nonMaximumSuppression<T extends PersonDetection>(
  detections: readonly T[],
  iouThreshold: number,
  maxDetections = Infinity,
): T[] {
  const order = detections.map((_, index) => index).sort((i, j) => (detections[j] as T).score - (detections[i] as T).score || i - j);
  const kept: T[] = [];
  for (const index of order) {
    if (kept.length >= maxDetections) break;
    const candidate = detections[index] as T;
    if (kept.every((box) => detectionIou(box, candidate) <= iouThreshold)) kept.push(candidate);
  }
  return kept;
}
