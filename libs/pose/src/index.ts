export { COCO17, flipPermutation, schemaProblems } from "./keypoint-schema.js";
export type { KeypointSchema } from "./keypoint-schema.js";
export { applyAffine, applyAffineToPoints, composeAffine, IDENTITY, invertAffine } from "./affine.js";
export type { Affine2D } from "./affine.js";
