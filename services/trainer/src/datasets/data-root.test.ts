import { mkdir, realpath, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { datasetProblems, resolveUnder } from "./data-root.js";

describe("resolveUnder", () => {
  let temp: { path: string; remove: () => Promise<void> };
  let root: string;
  let outside: string;

  beforeEach(async () => {
    temp = await makeTempDir("poseloop-paths-");
    root = join(temp.path, "data");
    outside = join(temp.path, "secret");
    await mkdir(join(root, "coco", "annotations"), { recursive: true });
    await writeFile(join(root, "coco", "annotations", "person_keypoints_val2017.json"), "{}");
    await mkdir(outside);
    await writeFile(join(outside, "file.json"), "{}");
    await symlink(outside, join(root, "escape"));
    await symlink(join(root, "coco"), join(root, "coco-link"));
  });
  afterEach(async () => {
    await temp.remove();
  });

  async function rejection(relative: string): Promise<AppError> {
    const error: unknown = await resolveUnder(root, relative, "DATASET.ROOT").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }

  it("resolves a nested path to its real path", async () => {
    const resolved = await resolveUnder(root, "coco/annotations/person_keypoints_val2017.json", "DATASET.TEST_SET");
    expect(resolved).toBe(await realpath(join(root, "coco", "annotations", "person_keypoints_val2017.json")));
  });

  it("follows a link that stays inside the root, and accepts an absolute path inside it", async () => {
    expect(await resolveUnder(root, "coco-link/annotations", "DATASET.ROOT")).toBe(await realpath(join(root, "coco", "annotations")));
    expect(await resolveUnder(root, join(root, "coco"), "DATASET.ROOT")).toBe(await realpath(join(root, "coco")));
  });

  it("denies '..' escapes", async () => {
    const error = await rejection("coco/../../secret/file.json");
    expect(error.code).toBe(Code.PERMISSION_DENIED);
    expect(error.message).toBe("DATASET.ROOT: coco/../../secret/file.json is outside the allowed root");
  });

  it("denies an absolute path outside the root", async () => {
    expect((await rejection(join(outside, "file.json"))).code).toBe(Code.PERMISSION_DENIED);
  });

  it("denies a symbolic link whose target is outside the root", async () => {
    const error = await rejection("escape/file.json");
    expect(error.code).toBe(Code.PERMISSION_DENIED);
    expect(error.message).not.toContain(temp.path);
  });

  it("names a missing path as INVALID_ARGUMENT", async () => {
    const error = await rejection("coco/missing");
    expect(error.code).toBe(Code.INVALID_ARGUMENT);
    expect(error.message).toBe("DATASET.ROOT: coco/missing does not exist");
  });
});

describe("datasetProblems", () => {
  let temp: { path: string; remove: () => Promise<void> };
  beforeEach(async () => {
    temp = await makeTempDir("poseloop-dataset-");
  });
  afterEach(async () => {
    await temp.remove();
  });

  const coco = (root: string, useGtBoxes = true) =>
    create(TrainConfigSchema, {
      data: {
        kind: DatasetKind.COCO,
        coco: {
          root,
          trainAnnotations: "annotations/person_keypoints_train2017.json",
          trainImages: "train2017",
          valAnnotations: "annotations/person_keypoints_val2017.json",
          valImages: "val2017",
          valDetections: "detections.json",
        },
      },
      validation: { useGtBoxes },
    });

  it("lists every missing or wrong-kind path of the dataset", async () => {
    await mkdir(join(temp.path, "coco", "annotations"), { recursive: true });
    await mkdir(join(temp.path, "coco", "annotations", "person_keypoints_train2017.json"));
    await mkdir(join(temp.path, "coco", "train2017"));
    expect(await datasetProblems(coco("coco", false), temp.path)).toEqual([
      "DATASET.TRAIN_SET (data.coco.train_annotations): annotations/person_keypoints_train2017.json is not a file",
      "DATASET.TEST_SET (data.coco.val_annotations): annotations/person_keypoints_val2017.json does not exist",
      "DATASET.TEST_SET (data.coco.val_images): val2017 does not exist",
      "TEST.COCO_BBOX_FILE (data.coco.val_detections): detections.json does not exist",
    ]);
  });

  it("throws PERMISSION_DENIED for a dataset outside the data root", async () => {
    await expect(datasetProblems(coco("../elsewhere"), temp.path)).rejects.toMatchObject({ code: Code.PERMISSION_DENIED });
  });
});
