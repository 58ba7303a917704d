import { clone, create } from "@bufbuild/protobuf";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DataSpecSchema, DatasetKind, type DataSpec } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, TrainConfigSchema, ValidationSpecSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { EvaluateRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/** As many synthetic images as a training config may ask for. */
const MAX_SYNTHETIC_IMAGES = 1_000_000;
const MAX_PEOPLE = 32;

/**
 * Problems of an Evaluate request that need no lookup, every one of them (one INVALID_ARGUMENT names them
 * all): what to evaluate, the precision, and the shape of the dataset. The checks that need the model's job
 * (detections without ground-truth boxes) and the data root come after, in `evaluationDataProblems` and
 * datasetProblems.
 */
export function evaluateRequestProblems(request: EvaluateRequest): string[] {
  const problems: string[] = [];
  const model = request.model;
  if (model.case === undefined) {
    problems.push("name the model: a published version (version.name, and version.version or the serving one) or a job's checkpoint (checkpoint.job_id)");
  } else if (model.case === "version" && model.value.name.trim() === "") {
    problems.push("version.name: the model name is required");
  } else if (model.case === "checkpoint" && model.value.jobId.trim() === "") {
    problems.push("checkpoint.job_id: the job is required");
  }
  if (![Precision.UNSPECIFIED, Precision.FP32, Precision.INT8].includes(request.precision)) {
    problems.push(`precision must be unspecified (the served artifact), fp32 or int8, got ${Precision[request.precision] ?? request.precision}`);
  } else if (model.case === "checkpoint" && request.precision === Precision.INT8) {
    problems.push("precision: a checkpoint is evaluated in fp32 (publish it for an int8 model, then evaluate the version)");
  }
  if (request.data !== undefined) problems.push(...dataShapeProblems(request.data));
  return problems;
}

function dataShapeProblems(data: DataSpec): string[] {
  const problems: string[] = [];
  if (!(data.valFraction >= 0 && data.valFraction < 1)) problems.push(`data.val_fraction must be in [0, 1), got ${data.valFraction}`);
  switch (data.kind) {
    case DatasetKind.COCO: {
      const coco = data.coco;
      if (coco === undefined || coco.root === "") problems.push("data.coco.root is required: the dataset's folder under the trainer's data root");
      const annotations = coco?.valAnnotations ?? "";
      const images = coco?.valImages ?? "";
      if (annotations === "" && images === "") {
        if (!(data.valFraction > 0) || coco?.trainImages === "" || coco?.trainAnnotations === "") {
          problems.push("data.coco.val_annotations and data.coco.val_images are required (or data.val_fraction with the training split to hold it out of)");
        }
      } else if (annotations === "" || images === "") {
        problems.push("data.coco.val_annotations and data.coco.val_images go together: the annotation file and its images folder");
      } else {
        const split = images.replace(/\/+$/, "");
        if (annotations !== `annotations/person_keypoints_${split}.json`) {
          problems.push(`data.coco.val_annotations must be annotations/person_keypoints_${split}.json for images in ${split}/ (the COCO layout), got ${annotations}`);
        }
      }
      break;
    }
    case DatasetKind.SYNTHETIC: {
      const s = data.synthetic;
      const valImages = s?.valImages ?? 0;
      if ((valImages === 0 && !(data.valFraction > 0)) || valImages > MAX_SYNTHETIC_IMAGES) {
        problems.push(`data.synthetic.val_images must be 1 to ${MAX_SYNTHETIC_IMAGES}, got ${valImages}`);
      }
      if ((s?.trainImages ?? 0) > MAX_SYNTHETIC_IMAGES) problems.push(`data.synthetic.train_images must be at most ${MAX_SYNTHETIC_IMAGES}, got ${s?.trainImages}`);
      const [w, h] = [s?.imageWidth ?? 0, s?.imageHeight ?? 0];
      if (w < 16 || w > 8192 || h < 16 || h > 8192) problems.push(`data.synthetic.image_width and image_height must be 16 to 8192 pixels each, got ${w} x ${h}`);
      if ((s?.maxPeople ?? 0) > MAX_PEOPLE) problems.push(`data.synthetic.max_people must be 1 to ${MAX_PEOPLE}, got ${s?.maxPeople}`);
      const occlusion = s?.occlusion ?? 0;
      if (!(occlusion >= 0 && occlusion <= 1)) problems.push(`data.synthetic.occlusion must be in [0, 1], got ${occlusion}`);
      if ((s?.seed ?? 0n) > BigInt(Number.MAX_SAFE_INTEGER)) problems.push(`data.synthetic.seed must be at most ${Number.MAX_SAFE_INTEGER}, got ${s?.seed}`);
      break;
    }
    default:
      problems.push(`data.kind must be coco or synthetic, got ${DatasetKind[data.kind] ?? data.kind}`);
  }
  return problems;
}

/**
 * The config an evaluation runs with: the model's job config (its model contract, its TEST.* settings, its
 * threads), with the request's dataset and TEST.* choices over it. With neither, the job's own validation
 * set and settings: the evaluation the job ran.
 */
export function evaluationConfig(jobConfig: TrainConfig, request: EvaluateRequest): TrainConfig {
  const config = clone(TrainConfigSchema, jobConfig);
  if (request.data !== undefined) {
    const data = clone(DataSpecSchema, request.data);
    // The defaults a training config gets (resolveTrainConfig), so that a set named alike is the same set.
    if (data.minKeypoints === 0) data.minKeypoints = 1;
    if (data.kind === DatasetKind.SYNTHETIC && data.synthetic !== undefined && data.synthetic.maxPeople === 0) data.synthetic.maxPeople = 4;
    config.data = data;
  }
  const validation = (config.validation ??= create(ValidationSpecSchema));
  if (request.flipTest !== undefined) validation.flipTest = request.flipTest;
  if (request.useGtBoxes !== undefined) validation.useGtBoxes = request.useGtBoxes;
  if (request.maxImages > 0) validation.maxImages = request.maxImages;
  return config;
}

/** Problems of the resolved evaluation config's dataset with its TEST.* settings (boxes to crop people with). */
export function evaluationDataProblems(config: TrainConfig): string[] {
  // A detector is measured on whole pictures: it finds the people itself.
  if (config.validation?.useGtBoxes === true || config.model?.architecture === Architecture.DETECTOR_LITE) return [];
  if (config.data?.kind === DatasetKind.SYNTHETIC) return ["use_gt_boxes must be true for a synthetic dataset: it has no person detections"];
  if (config.data?.kind === DatasetKind.COCO && (config.data.coco?.valDetections ?? "") === "") {
    return ["data.coco.val_detections (a COCO results file of person boxes) is required when use_gt_boxes is false"];
  }
  return [];
}

/** What the dataset of an evaluation is, for the log and the answer's metrics (which name it as evaluated). */
export function describeData(data: DataSpec | undefined): string {
  if (data?.kind === DatasetKind.SYNTHETIC) {
    const s = data.synthetic;
    return `synthetic (seed ${s?.seed ?? 0n}, ${s?.valImages ?? 0} images ${s?.imageWidth ?? 0}x${s?.imageHeight ?? 0})`;
  }
  if (data?.kind === DatasetKind.COCO) return `coco ${data.coco?.root ?? ""}/${data.coco?.valAnnotations ?? ""}`;
  return "none";
}
