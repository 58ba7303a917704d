/**
 * A person's score from its keypoint scores, as HRNet rescores before OKS-NMS and as a Person's score is
 * defined: the mean of the keypoint scores above `minKeypointScore` (0 when none is), times the box's score
 * when a detector supplied the box.
 */
export function instanceScore(keypointScores: ArrayLike<number>, boxScore = 1, minKeypointScore = 0.2): number {
  let sum = 0;
  let count = 0;
  for (let j = 0; j < keypointScores.length; j++) {
    const score = keypointScores[j] as number;
    if (score > minKeypointScore) {
      sum += score;
      count++;
    }
  }
  return count === 0 ? 0 : (sum / count) * boxScore;
}
