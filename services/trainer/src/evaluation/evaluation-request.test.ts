import { create } from "@bufbuild/protobuf";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { EvaluateRequestSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { evaluateRequestProblems, evaluationConfig, evaluationDataProblems } from "./evaluation-request.js";

const JOB_CONFIG = create(TrainConfigSchema, {
  name: "tiny",
  data: { kind: DatasetKind.SYNTHETIC, synthetic: { trainImages: 40, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 2 } },
  validation: { useGtBoxes: true, flipTest: false, oksThreshold: 0.9 },
});

describe("Evaluate requests", () => {
  it("names every problem of a request at once", () => {
    expect(evaluateRequestProblems(create(EvaluateRequestSchema, {}))).toEqual([expect.stringMatching(/^name the model/)]);
    const problems = evaluateRequestProblems(
      create(EvaluateRequestSchema, {
        model: { case: "checkpoint", value: { jobId: "" } },
        precision: Precision.FP16,
        data: { kind: DatasetKind.COCO, coco: { root: "", valAnnotations: "annotations/person_keypoints_val.json", valImages: "val2017" } },
      }),
    );
    expect(problems).toEqual([
      "checkpoint.job_id: the job is required",
      expect.stringMatching(/^precision must be unspecified/),
      expect.stringMatching(/^data\.coco\.root is required/),
      expect.stringMatching(/^data\.coco\.val_annotations must be annotations\/person_keypoints_val2017\.json/),
    ]);
    expect(evaluateRequestProblems(create(EvaluateRequestSchema, { model: { case: "checkpoint", value: { jobId: "job-1" } }, precision: Precision.INT8 }))).toEqual([
      expect.stringMatching(/^precision: a checkpoint is evaluated in fp32/),
    ]);
    const synthetic = create(EvaluateRequestSchema, { model: { case: "version", value: { name: "demo" } }, data: { kind: DatasetKind.SYNTHETIC, synthetic: { valImages: 0, imageWidth: 8, imageHeight: 96 } } });
    expect(evaluateRequestProblems(synthetic)).toEqual([expect.stringMatching(/^data\.synthetic\.val_images must be 1/), expect.stringMatching(/^data\.synthetic\.image_width and image_height/)]);
  });

  it("runs with the job's own set and TEST.* settings unless the request names others", () => {
    const own = evaluationConfig(JOB_CONFIG, create(EvaluateRequestSchema, { model: { case: "version", value: { name: "demo" } } }));
    expect(own.data).toEqual(JOB_CONFIG.data);
    expect(own.validation).toEqual(JOB_CONFIG.validation);

    const other = evaluationConfig(
      JOB_CONFIG,
      create(EvaluateRequestSchema, {
        model: { case: "version", value: { name: "demo" } },
        data: { kind: DatasetKind.SYNTHETIC, synthetic: { seed: 7n, valImages: 16, imageWidth: 64, imageHeight: 64 } },
        flipTest: true,
        maxImages: 4,
      }),
    );
    expect(other.data?.synthetic).toMatchObject({ seed: 7n, valImages: 16, maxPeople: 4 });
    expect(other.data?.minKeypoints).toBe(1);
    expect(other.validation).toMatchObject({ flipTest: true, useGtBoxes: true, maxImages: 4, oksThreshold: 0.9 });
    // The job's config is not changed.
    expect(JOB_CONFIG.validation?.flipTest).toBe(false);
  });

  it("needs person detections without ground-truth boxes", () => {
    const request = create(EvaluateRequestSchema, { model: { case: "version", value: { name: "demo" } }, useGtBoxes: false });
    expect(evaluationDataProblems(evaluationConfig(JOB_CONFIG, request))).toEqual([expect.stringMatching(/^use_gt_boxes must be true for a synthetic dataset/)]);
    const coco = create(EvaluateRequestSchema, { model: { case: "version", value: { name: "demo" } }, useGtBoxes: false, data: { kind: DatasetKind.COCO, coco: { root: "coco", valAnnotations: "annotations/person_keypoints_val2017.json", valImages: "val2017" } } });
    expect(evaluationDataProblems(evaluationConfig(JOB_CONFIG, coco))).toEqual([expect.stringMatching(/^data\.coco\.val_detections/)]);
  });
});
