import { applyAffine, type Affine2D } from "./affine.js";
import type { KeypointCodec } from "./keypoint-codec.js";

/**
 * Decodes instance `index` of a top-down model's outputs and maps it back to the frame: [x, y, score] per
 * keypoint, in frame pixels. The one decoding path of served keypoints and of validation.
 */
export function decodeToFrame(codec: KeypointCodec, outputs: readonly Float32Array[], index: number, cropToFrame: Affine2D, out = new Float32Array(codec.numKeypoints * 3)): Float32Array {
  const decoded = codec.decode(outputs, index);
  for (let k = 0; k < codec.numKeypoints; k++) {
    const [x, y] = applyAffine(cropToFrame, decoded.keypoints[2 * k] as number, decoded.keypoints[2 * k + 1] as number);
    out[3 * k] = x;
    out[3 * k + 1] = y;
    out[3 * k + 2] = decoded.scores[k] as number;
  }
  return out;
}
