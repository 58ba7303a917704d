import { posix } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EvaluateOptions } from "@poseloop/client";
import type { KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { DatasetKind, type DataSpecSchema } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { EvaluateResponseSchema, type EvaluateResponse } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { parseInteger, type Command, type ParsedArgs } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { formatTable, modelRefText, precisionName } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";

/**
 * An evaluation is a validation pass: seconds for the demo, minutes for COCO val2017 on a CPU. The trainer
 * stops it when the caller goes away, so the 30 s default deadline would end most of them; --timeout still
 * sets one.
 */
const EVALUATE_TIMEOUT_MS = 30 * 60_000;

type ValTarget = Pick<EvaluateOptions, "model" | "checkpoint">;

/** MODEL[@VERSION], or --job JOB [--checkpoint ID]: exactly one. */
export function valTarget(positional: string | undefined, job: string | undefined, checkpoint: string | undefined): ValTarget {
  if (positional !== undefined && job !== undefined) throw new UsageError("give MODEL[@VERSION] or --job JOB, not both", "val");
  if (positional !== undefined) {
    if (checkpoint !== undefined) throw new UsageError("--checkpoint goes with --job JOB, not with a model version", "val");
    const at = positional.indexOf("@");
    const name = (at < 0 ? positional : positional.slice(0, at)).trim();
    const version = at < 0 ? "" : positional.slice(at + 1).trim();
    if (name === "" || (at >= 0 && version === "")) throw new UsageError(`"${positional}" is not MODEL or MODEL@VERSION`, "val");
    return { model: { name, version } };
  }
  if (job === undefined || job.trim() === "") throw new UsageError("name the model: poseloop val MODEL[@VERSION] (or --job JOB [--checkpoint ID])", "val");
  return { checkpoint: { jobId: job.trim(), checkpointId: checkpoint?.trim() ?? "" } };
}

/**
 * A COCO keypoint dataset from an annotation file's path on the trainer, under its data root:
 * DATASET/annotations/person_keypoints_SPLIT.json, the images in DATASET/SPLIT unless `images` names them
 * (the trainer checks the layout, and that every path stays inside its data root).
 */
export function cocoDataSpec(annotations: string, images: string | undefined, detections: string | undefined): MessageInitShape<typeof DataSpecSchema> {
  const file = posix.normalize(annotations.replaceAll("\\", "/"));
  const match = /^(?:(.*)\/)?annotations\/person_keypoints_([^/]+)\.json$/.exec(file);
  if (match === null) throw new UsageError(`--data takes a COCO keypoint annotation file, <dataset>/annotations/person_keypoints_<split>.json under the trainer's data root; got "${annotations}"`, "val");
  const split = match[2] ?? "";
  const root = match[1] === undefined || match[1] === "" ? (file.startsWith("/") ? "/" : ".") : match[1];
  const inRoot = (path: string, flag: string): string => {
    const relative = posix.relative(root === "." ? "" : root, posix.normalize(path.replaceAll("\\", "/")));
    if (relative === "" || relative === ".." || relative.startsWith("../") || posix.isAbsolute(relative)) {
      throw new UsageError(`${flag} must be inside the dataset's folder ${root} (the folder holding annotations/), got "${path}"`, "val");
    }
    return relative;
  };
  return {
    kind: DatasetKind.COCO,
    coco: {
      root,
      valAnnotations: `annotations/person_keypoints_${split}.json`,
      valImages: images === undefined ? split : inRoot(images, "--images"),
      ...(detections === undefined ? {} : { valDetections: inRoot(detections, "--detections") }),
    },
  };
}

/** "WxH" in pixels. */
function imageSize(raw: string): { width: number; height: number } {
  const match = /^(\d+)x(\d+)$/i.exec(raw.trim());
  if (match === null) throw new UsageError(`--image-size takes WIDTHxHEIGHT in pixels, e.g. 256x192; got "${raw}"`, "val");
  return { width: Number(match[1]), height: Number(match[2]) };
}

const SYNTHETIC_ONLY = ["val-images", "train-images", "image-size", "max-people"] as const;
const COCO_ONLY = ["images", "detections"] as const;

/** The dataset and TEST.* choices of the command line; none: the model's job's own validation set. */
export function valData(args: ParsedArgs): Pick<EvaluateOptions, "data" | "useGtBoxes"> {
  const annotations = args.string("data");
  const seed = args.string("synthetic");
  if (annotations !== undefined && seed !== undefined) throw new UsageError("give --data or --synthetic, not both", "val");
  for (const name of SYNTHETIC_ONLY) if (seed === undefined && args.has(name)) throw new UsageError(`--${name} goes with --synthetic SEED`, "val");
  for (const name of COCO_ONLY) if (annotations === undefined && args.has(name)) throw new UsageError(`--${name} goes with --data ANNOTATIONS`, "val");
  if (annotations !== undefined) {
    const detections = args.string("detections");
    // A dataset of one's own has no detections unless given: the people are cropped by their labelled boxes.
    return { data: cocoDataSpec(annotations, args.string("images"), detections), useGtBoxes: detections === undefined };
  }
  if (seed !== undefined) {
    const size = imageSize(args.string("image-size") ?? "256x192");
    return {
      data: {
        kind: DatasetKind.SYNTHETIC,
        synthetic: {
          seed: BigInt(parseInteger(seed, "--synthetic", "val")),
          valImages: args.int("val-images", 1) ?? 100,
          trainImages: args.int("train-images", 0) ?? 0,
          imageWidth: size.width,
          imageHeight: size.height,
          maxPeople: args.int("max-people", 1, 32) ?? 4,
        },
      },
      useGtBoxes: true,
    };
  }
  return {};
}

/** A metric for the table: four decimals as results.csv has them; COCO's -1 (no people of that size) as "-". */
function metricCell(value: number): string {
  return value < 0 ? "-" : value.toFixed(4);
}

/** The metrics as a one-row table with results.csv's column names. */
export function metricsTable(metrics: KeypointMetrics | undefined): string[] {
  const m = metrics;
  const columns: [string, number][] = [
    ["ap", m?.ap ?? -1],
    ["ap50", m?.ap50 ?? -1],
    ["ap75", m?.ap75 ?? -1],
    ["ap_medium", m?.apMedium ?? -1],
    ["ap_large", m?.apLarge ?? -1],
    ["ar", m?.ar ?? -1],
    ["ar50", m?.ar50 ?? -1],
    ["ar75", m?.ar75 ?? -1],
    ["ar_medium", m?.arMedium ?? -1],
    ["ar_large", m?.arLarge ?? -1],
  ];
  return formatTable(
    columns.map(([name]) => name),
    [columns.map(([, value]) => metricCell(value))],
  );
}

/** "demo@v3 (int8, sha256:0123456789ab) on synthetic/val: 8 images, 12 people, flip test off, 1.5 s". */
export function evaluatedText(response: EvaluateResponse): string {
  const what = response.checkpoint !== undefined && response.checkpoint.jobId !== "" ? `${response.checkpoint.jobId}/${response.checkpoint.checkpointId}` : modelRefText(response.version);
  const digest = response.modelDigest.replace(/^sha256:/, "").slice(0, 12);
  const details = [precisionName(response.precision), digest === "" ? "" : `sha256:${digest}`].filter((d) => d !== "").join(", ");
  const m = response.metrics;
  const counts = m === undefined ? "" : `: ${m.numImages} images, ${m.numInstances} people, flip test ${m.flipTest ? "on" : "off"}`;
  return `evaluated ${what}${details === "" ? "" : ` (${details})`} on ${m?.dataset || "?"}${counts}, ${response.seconds.toFixed(1)} s`;
}

export const valCommand: Command = {
  name: "val",
  summary: "Evaluate a published version or a job's checkpoint (COCO keypoint AP/AR) on a dataset.",
  synopsis: "<model>[@<version>] | --job JOB [--checkpoint ID]  [--data ANNOTATIONS | --synthetic SEED] [options]",
  description: [
    "The trainer measures the model the way it validates during training and gates a publication (the same",
    "crops, sessions, decoding and COCOeval), so a model on its job's own validation set, the default, gets the",
    "AP the job recorded. A version is evaluated with its served artifact (int8 when it passed the gate; --fp32",
    "for its fp32 model), a checkpoint in fp32; without --checkpoint, the job's best (else its last).",
    "--data names a COCO keypoint annotation file on the trainer, under its data root (paths outside it are",
    "refused): <dataset>/annotations/person_keypoints_<split>.json, its images in <dataset>/<split>. People are",
    "cropped by their labelled boxes unless --detections gives a COCO results file of person boxes.",
    "--synthetic SEED evaluates on rendered people instead. AP50, AP75 and the medium/large splits follow",
    "COCOeval ('-' where the set has no such people). The deadline is 30 minutes unless --timeout sets another.",
  ].join("\n"),
  positionals: { min: 0, max: 1 },
  examples: [
    "poseloop val demo",
    "poseloop val demo@<version> --fp32 --json",
    "poseloop val --job <job-id> --checkpoint <checkpoint-id>",
    "poseloop val demo --data <dataset>/annotations/person_keypoints_val2017.json --flip-test",
    "poseloop val demo --synthetic 7 --val-images 200 --image-size 256x192",
  ],
  options: {
    job: { type: "string", value: "JOB", help: "evaluate a checkpoint of this job (default: its best, else its last)" },
    checkpoint: { type: "string", value: "ID", help: "the checkpoint (poseloop checkpoints JOB lists them)" },
    fp32: { type: "boolean", help: "a version's fp32 model instead of the served (int8) one" },
    data: { type: "string", value: "ANNOTATIONS", help: "COCO keypoint file on the trainer, under its data root" },
    images: { type: "string", value: "DIR", help: "the images of --data (default <dataset>/<split>)" },
    detections: { type: "string", value: "FILE", help: "person boxes of --data (COCO results JSON) instead of the labelled boxes" },
    synthetic: { type: "string", value: "SEED", help: "a rendered set of this seed instead of --data" },
    "val-images": { type: "string", value: "N", help: "images of --synthetic (default 100)" },
    "train-images": { type: "string", value: "N", help: "the set of a config with this many training images (default 0)" },
    "image-size": { type: "string", value: "WxH", help: "picture size of --synthetic (default 256x192)" },
    "max-people": { type: "string", value: "N", help: "people per picture of --synthetic, 1 to N (default 4)" },
    "flip-test": { type: "boolean", help: "average with the flipped crop (default: as the job validated)" },
    "max-images": { type: "string", value: "N", help: "evaluate the first N images only" },
  },
  async run(ctx) {
    const target = valTarget(ctx.args.positionals[0], ctx.args.string("job"), ctx.args.string("checkpoint"));
    if (target.checkpoint !== undefined && ctx.args.flag("fp32")) throw new UsageError("--fp32 is for a version: a checkpoint is always evaluated in fp32", "val");
    const data = valData(ctx.args);
    const maxImages = ctx.args.int("max-images", 1);
    const response = await ctx.trainer().evaluate({
      ...target,
      ...data,
      ...(ctx.args.flag("flip-test") ? { flipTest: true } : {}),
      ...(maxImages === undefined ? {} : { maxImages }),
      ...(ctx.args.flag("fp32") ? { precision: "fp32" as const } : {}),
      signal: ctx.signal,
      ...(ctx.args.has("timeout") ? {} : { timeoutMs: EVALUATE_TIMEOUT_MS }),
    });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(EvaluateResponseSchema, response));
      return ExitCode.OK;
    }
    ctx.out.lines(metricsTable(response.metrics));
    ctx.err.line(evaluatedText(response));
    return ExitCode.OK;
  },
};
