import type { RequestOptions } from "@poseloop/client";
import { AppError } from "@poseloop/core";
import { COCO17, KNOWN_KEYPOINT_SCHEMAS, type KeypointSchema } from "@poseloop/pose";
import type { KeypointSchema as KeypointSchemaProto, ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { GetServingModelResponse } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
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

/** The one call ServingSchemas makes: InferenceClient.getServingModel. */
export interface ServingModelSource {
  getServingModel(modelName: string, options: RequestOptions): Promise<GetServingModelResponse>;
}

/**
 * A lookup that only names keypoints and draws limbs gets a short deadline: when it stalls, the results are
 * drawn by their keypoint count rather than held up.
 */
const SCHEMA_LOOKUP_TIMEOUT_MS = 5_000;

/**
 * The keypoint schemas of the model versions that results name, from the inferencer's GetServingModel: a manifest
 * may declare a schema of its own (names, skeleton) that no keypoint count implies. One lookup per version, so a
 * stream whose serving version switches to another schema draws the new one from its first frame. A version no
 * lookup could name (a server or token that refuses the call, another swap in between) has no schema here, and
 * its results are drawn and named by their keypoint count, as schemaForKeypoints does without a manifest.
 */
export class ServingSchemas {
  readonly #source: ServingModelSource;
  readonly #signal: AbortSignal | undefined;
  /** What each lookup answered, by "name@version"; undefined for a manifest without keypoint names. */
  readonly #answers = new Map<string, KeypointSchema | undefined>();
  readonly #asked = new Set<string>();
  readonly #inFlight = new Set<Promise<void>>();

  constructor(source: ServingModelSource, signal?: AbortSignal) {
    this.#source = source;
    this.#signal = signal;
  }

  /** Starts looking up what `modelName` ("": the inferencer's default) serves, before a result names its version. */
  prefetch(modelName: string): void {
    // Its failure, if any, reaches whoever awaits schemaFor; nobody may, so it is no unhandled rejection.
    this.#lookUp(modelName).catch(() => undefined);
  }

  /** The schema `model`'s manifest declares, or undefined when none could be learnt. */
  async schemaFor(model: ModelRef | undefined): Promise<KeypointSchema | undefined> {
    if (model === undefined || model.version === "") return undefined;
    const key = versionKey(model);
    if (!this.#answers.has(key) && this.#inFlight.size > 0) await Promise.all(this.#inFlight);
    if (!this.#answers.has(key) && !this.#asked.has(key)) {
      this.#asked.add(key);
      await this.#lookUp(model.name);
    }
    return this.#answers.get(key);
  }

  #lookUp(modelName: string): Promise<void> {
    const lookup = this.#ask(modelName).finally(() => this.#inFlight.delete(lookup));
    this.#inFlight.add(lookup);
    return lookup;
  }

  async #ask(modelName: string): Promise<void> {
    let serving: GetServingModelResponse;
    try {
      serving = await this.#source.getServingModel(modelName, { timeoutMs: SCHEMA_LOOKUP_TIMEOUT_MS, ...(this.#signal === undefined ? {} : { signal: this.#signal }) });
    } catch (error) {
      // Refused, unknown to an older server, unreachable, too slow: drawn as before. Ctrl-C still ends the command.
      if (AppError.is(error) && this.#signal?.aborted !== true) return;
      throw error;
    }
    const manifest = serving.manifest;
    if (manifest?.model === undefined || manifest.model.version === "") return;
    const schema = manifest.keypointSchema;
    this.#answers.set(versionKey(manifest.model), schema === undefined || schema.keypointNames.length === 0 ? undefined : drawingSchema(schema));
  }
}

function versionKey(model: ModelRef): string {
  return `${model.name}@${model.version}`;
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
