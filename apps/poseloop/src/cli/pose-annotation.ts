import { COCO17, KNOWN_KEYPOINT_SCHEMAS, type KeypointSchema } from "@poseloop/pose";
import type { KeypointSchema as KeypointSchemaProto } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { Person } from "@poseloop/proto/poseloop/common/v1/pose_pb";
import { drawPoses, drawText, lineHeight, strokeRect, type OverlayPerson, type Rgb, type RgbImage } from "@poseloop/vision";

const genericSchemas = new Map<number, KeypointSchema>();

/**
 * The schema to draw `count` keypoints with: the model's own (`declared`, from its manifest) when it has that
 * many keypoints, else the known schema of that size (COCO-17, BlazePose-33, COCO-WholeBody-133: skeleton,
 * left/right colours), else joints only, since a result carries no skeleton of its own.
 */
export function schemaForKeypoints(count: number, declared?: KeypointSchema): KeypointSchema {
  if (declared !== undefined && declared.names.length === count) return declared;
  const known = KNOWN_KEYPOINT_SCHEMAS.find((schema) => schema.names.length === count);
  if (known !== undefined) return known;
  let schema = genericSchemas.get(count);
  if (schema === undefined) {
    schema = { name: `keypoints-${count}`, names: Array.from({ length: count }, (_, i) => `k${i}`), skeleton: [], flipPairs: [], sigmas: Array.from({ length: count }, () => 0.05) };
    genericSchemas.set(count, schema);
  }
  return schema;
}

/** A manifest's keypoint schema as the overlay draws it (GetServingModel's manifest names it). */
export function drawingSchema(schema: KeypointSchemaProto): KeypointSchema {
  return {
    name: schema.name,
    names: [...schema.keypointNames],
    skeleton: schema.skeleton.map((limb) => [limb.fromIndex, limb.toIndex] as const),
    flipPairs: schema.flipPairs.map((pair) => [pair.leftIndex, pair.rightIndex] as const),
    sigmas: [...schema.oksSigmas],
  };
}

/** Persons of a result as the overlay draws them: [x, y, score] per keypoint. */
export function overlayPersons(persons: readonly Person[]): OverlayPerson[] {
  return persons.map((person) => {
    const keypoints = new Float32Array(person.keypoints.length * 3);
    person.keypoints.forEach((keypoint, i) => {
      keypoints[3 * i] = keypoint.x;
      keypoints[3 * i + 1] = keypoint.y;
      keypoints[3 * i + 2] = keypoint.score;
    });
    return {
      keypoints,
      ...(person.bbox === undefined ? {} : { bbox: person.bbox }),
      ...(person.trackId === undefined ? {} : { trackId: person.trackId }),
    };
  });
}

export interface AnnotationOptions {
  /** The top line: model version, frame rate, latency. */
  readonly caption: string;
  /** Set on the frames right after the serving version changed: a frame border and this line in yellow. */
  readonly banner?: string;
  readonly minScore?: number;
  /** The serving model's keypoint schema (its manifest's), drawn when the results have its keypoints. */
  readonly schema?: KeypointSchema;
}

const HIGHLIGHT: Rgb = [255, 220, 0];
const BLACK: Rgb = [0, 0, 0];

/**
 * A copy of `picture` with the persons' skeletons and boxes, the caption burnt in at the top left and,
 * where a model swap just happened, a yellow border and banner, so the switch is visible in the video.
 */
export function annotatePicture(picture: RgbImage, persons: readonly Person[], options: AnnotationOptions): RgbImage {
  const count = persons[0]?.keypoints.length ?? COCO17.names.length;
  const drawable = persons.filter((person) => person.keypoints.length === count);
  const annotated = drawPoses(picture, overlayPersons(drawable), schemaForKeypoints(count, options.schema), {
    caption: options.caption,
    ...(options.minScore === undefined ? {} : { minScore: options.minScore }),
  });
  if (options.banner !== undefined) {
    const scale = annotated.height < 720 ? 1 : 2;
    const border = Math.max(3, Math.round(Math.min(annotated.width, annotated.height) / 100));
    strokeRect(annotated, 0, 0, annotated.width, annotated.height, HIGHLIGHT, border);
    const margin = lineHeight(scale) / 2;
    drawText(annotated, options.banner, margin + border, margin + 2 * lineHeight(scale), HIGHLIGHT, { scale, background: BLACK, backgroundAlpha: 0.8 });
  }
  return annotated;
}
