import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { KeypointSchemaSchema as KeypointSchemaProtoSchema, ModelRefSchema, type KeypointSchema as KeypointSchemaProto } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PersonSchema, type Person } from "@poseloop/proto/poseloop/common/v1/pose_pb";
import { GetServingModelResponseSchema, ServingState, type GetServingModelResponse } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { createRgbImage, trackColour, type RgbImage } from "@poseloop/vision";
import { describe, expect, it } from "vitest";
import { annotatePicture, drawingSchema, ServingSchemas, type ServingModelSource } from "./pose-annotation.js";

const person = (x: number, trackId?: number): Person =>
  create(PersonSchema, {
    bbox: { x, y: 40, width: 40, height: 80 },
    score: 1,
    // Keypoints below the drawing threshold: only the box and its label are drawn.
    keypoints: Array.from({ length: 17 }, () => ({ x: x + 20, y: 80, score: 0 })),
    ...(trackId === undefined ? {} : { trackId }),
  });

const pixel = (image: RgbImage, x: number, y: number): number[] => Array.from(image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3));

describe("annotatePicture", () => {
  it("draws each track's box and #id label in the colour of its id, the same in every frame", () => {
    const grey = createRgbImage(200, 160, [128, 128, 128]);
    const first = annotatePicture(grey, [person(20, 3), person(120, 4)], { caption: "", minScore: 0.5 });
    // The person with track 3 has moved and comes second in the next frame: its colour follows its id.
    const next = annotatePicture(grey, [person(100, 4), person(30, 3)], { caption: "", minScore: 0.5 });
    expect(pixel(first, 20, 80)).toEqual([...trackColour(3)]);
    expect(pixel(first, 120, 80)).toEqual([...trackColour(4)]);
    expect(pixel(next, 30, 80)).toEqual([...trackColour(3)]);
    expect(pixel(next, 100, 80)).toEqual([...trackColour(4)]);
    expect(trackColour(3)).not.toEqual(trackColour(4));
    // The label sits above the box, in the track's colour.
    const label = (image: RgbImage, x: number) => {
      let found = 0;
      for (let y = 20; y < 40; y++) for (let dx = 0; dx < 20; dx++) if (pixel(image, x + dx, y).join() === trackColour(3).join()) found++;
      return found;
    };
    expect(label(first, 20)).toBeGreaterThan(5);
    // Without a track id, a plain box and no label.
    const untracked = annotatePicture(grey, [person(20)], { caption: "", minScore: 0.5 });
    expect(pixel(untracked, 20, 80)).not.toEqual([...trackColour(3)]);
    expect(label(untracked, 20)).toBe(0);
  });
});

/** A 5-keypoint schema of a model's own, as a manifest declares it inline. */
const HAND = create(KeypointSchemaProtoSchema, {
  name: "hand-5",
  keypointNames: ["wrist", "thumb", "index", "middle", "little"],
  skeleton: [1, 2, 3, 4].map((tip) => ({ fromIndex: 0, toIndex: tip })),
  oksSigmas: [0.05, 0.05, 0.05, 0.05, 0.05],
});

/** An inferencer's GetServingModel as a script of answers, one per call, recording the names asked for. */
function servingSource(answers: (() => GetServingModelResponse)[]): ServingModelSource & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    getServingModel: async (modelName) => {
      asked.push(modelName);
      const answer = answers.shift();
      if (answer === undefined) throw new Error("no more answers scripted");
      return answer();
    },
  };
}

const serving = (version: string, schema?: KeypointSchemaProto): GetServingModelResponse =>
  create(GetServingModelResponseSchema, { state: ServingState.SERVING, manifest: { model: { name: "hands", version }, ...(schema === undefined ? {} : { keypointSchema: schema }) } });

describe("ServingSchemas", () => {
  it("learns each version's declared schema once, a swap to another schema included", async () => {
    const source = servingSource([() => serving("v1", HAND), () => serving("v2")]);
    const schemas = new ServingSchemas(source);
    schemas.prefetch("hands");
    const v1 = await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v1" }));
    expect(v1?.names).toEqual(["wrist", "thumb", "index", "middle", "little"]);
    expect(v1?.skeleton).toEqual([[0, 1], [0, 2], [0, 3], [0, 4]]);
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v1" }))).toBe(v1);
    // The version after the swap declares no names: drawn by its keypoint count.
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v2" }))).toBeUndefined();
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v2" }))).toBeUndefined();
    expect(source.asked).toEqual(["hands", "hands"]);
  });

  it("names no schema for a version another swap raced past, and asks no more for it", async () => {
    const source = servingSource([() => serving("v3", HAND)]);
    const schemas = new ServingSchemas(source);
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v2" }))).toBeUndefined();
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v2" }))).toBeUndefined();
    // What the lookup did answer is kept for when the results reach that version.
    expect((await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v3" })))?.name).toBe("hand-5");
    expect(source.asked).toHaveLength(1);
  });

  it("falls back without an error where the inferencer refuses the call, and still ends on Ctrl-C", async () => {
    const refusing = servingSource([
      () => {
        throw new AppError(Code.PERMISSION_DENIED, "GetServingModel needs a token with the admin role");
      },
      () => {
        throw new AppError(Code.UNIMPLEMENTED, "unknown method");
      },
      () => {
        throw new AppError(Code.DEADLINE_EXCEEDED, "the inferencer did not answer in time");
      },
    ]);
    const schemas = new ServingSchemas(refusing);
    schemas.prefetch("");
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v1" }))).toBeUndefined();
    expect(await schemas.schemaFor(create(ModelRefSchema, { name: "hands", version: "v2" }))).toBeUndefined();
    expect(await schemas.schemaFor(undefined)).toBeUndefined();
    expect(refusing.asked).toEqual(["", "hands", "hands"]);

    const controller = new AbortController();
    const interrupted = new ServingSchemas(
      servingSource([
        () => {
          controller.abort();
          throw new AppError(Code.CANCELLED, "cancelled");
        },
      ]),
      controller.signal,
    );
    await expect(interrupted.schemaFor(create(ModelRefSchema, { name: "hands", version: "v1" }))).rejects.toMatchObject({ code: Code.CANCELLED });
  });
});

describe("annotatePicture with a declared schema", () => {
  it("draws the limbs a manifest declares, which the keypoint count alone does not imply", () => {
    const grey = createRgbImage(120, 120, [128, 128, 128]);
    // The wrist in the middle, a finger tip towards each corner.
    const points = [[60, 60], [20, 20], [100, 20], [100, 100], [20, 100]] as const;
    const hand = create(PersonSchema, { score: 1, keypoints: points.map(([x, y]) => ({ x, y, score: 1 })) });
    const declared = annotatePicture(grey, [hand], { caption: "", schema: drawingSchema(HAND) });
    const bare = annotatePicture(grey, [hand], { caption: "" });
    // Midway along each limb: drawn with the declared schema, background without it (joints only).
    for (const [x, y] of points.slice(1)) {
      const [mx, my] = [Math.round((60 + x) / 2), Math.round((60 + y) / 2)];
      expect(pixel(declared, mx, my), `limb to ${x},${y}`).not.toEqual([128, 128, 128]);
      expect(pixel(bare, mx, my)).toEqual([128, 128, 128]);
    }
  });
});
