export { COCO17, flipPermutation, schemaProblems } from "./keypoint-schema.js";
export type { KeypointSchema } from "./keypoint-schema.js";
