import { readFile, stat } from "node:fs/promises";
import { AppError, Code } from "@poseloop/core";
import { JobSchema, StartTrainingResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { parseKeyValue, type Command, type CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { followJob } from "./job-follow.js";
import { jobStateName } from "./job-format.js";
import { protoJson, writeJsonDocument, writeJsonLine } from "./json-output.js";
import { TRAIN_FLAG_KEYS, trainOverrides, type TrainFlag } from "./train-overrides.js";

/** Experiment files are a few kilobytes; anything this large is the wrong file. */
const MAX_EXPERIMENT_BYTES = 1024 * 1024;

export const trainCommand: Command = {
  name: "train",
  summary: "Start a training job from an experiment file (or resume one) and follow it to the end.",
  synopsis: "--cfg FILE [--lr X] [--batch-size N] [--grad-accum N] [--clip-grad X] [--epochs N] [--set KEY=VALUE]...",
  description: [
    "Sends the experiment file (HRNet-style YAML) as it is, with the flags as overrides of its keys:",
    "  --lr TRAIN.LR, --batch-size TRAIN.BATCH_SIZE_PER_GPU, --grad-accum TRAIN.GRAD_ACCUM_STEPS,",
    "  --clip-grad TRAIN.CLIP_GRAD, --epochs TRAIN.END_EPOCH; --set overrides any other key.",
    "The trainer validates everything and reports every problem at once. Then the job is followed: a",
    "progress bar on a terminal (plain lines otherwise), validation AP, checkpoints, the int8 gate and the",
    "publication. Ctrl-C stops following; the job goes on. The exit code is 0 when the job succeeded.",
  ].join("\n"),
  examples: [
    "poseloop train --cfg experiments/synthetic/lite_128x96_demo.yaml --lr 5e-4 --epochs 20",
    "poseloop train --cfg experiments/synthetic/lite_128x96_demo.yaml --set TRAIN.OPTIMIZER=adamw --detach",
    "poseloop train --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml --batch-size 16 --grad-accum 4 --clip-grad 5  # COCO in the trainer's data root",
    "poseloop train --resume <job-id> --epochs 30",
  ],
  positionals: { min: 0, max: 0 },
  options: {
    cfg: { type: "string", value: "FILE", help: "experiment file (YAML, HRNet layout)" },
    lr: { type: "string", value: "X", help: "learning rate (TRAIN.LR)" },
    "batch-size": { type: "string", value: "N", help: "samples per micro-batch (TRAIN.BATCH_SIZE_PER_GPU)" },
    "grad-accum": { type: "string", value: "N", help: "micro-batches per update (TRAIN.GRAD_ACCUM_STEPS)" },
    "clip-grad": { type: "string", value: "X", help: "clip gradients to this global norm, 0 for none (TRAIN.CLIP_GRAD)" },
    epochs: { type: "string", value: "N", help: "train until this epoch (TRAIN.END_EPOCH)" },
    set: { type: "string", multiple: true, value: "KEY=VALUE", help: "override any experiment key, e.g. --set TRAIN.OPTIMIZER=adamw" },
    resume: { type: "string", value: "JOB", help: "resume a cancelled or failed job from its last checkpoint" },
    label: { type: "string", multiple: true, value: "KEY=VALUE", help: "label the job" },
    "idempotency-key": { type: "string", value: "KEY", help: "the same key within a day returns the job it started first" },
    detach: { type: "boolean", help: "print the job and exit without following it" },
  },
  run: runTrain,
};

async function runTrain(ctx: CommandContext): Promise<number> {
  const { args } = ctx;
  const flags: Partial<Record<TrainFlag, string>> = {};
  for (const flag of Object.keys(TRAIN_FLAG_KEYS) as TrainFlag[]) {
    const value = args.string(flag);
    if (value !== undefined) flags[flag] = value;
  }
  const resume = args.string("resume");
  if (resume !== undefined) return resumeTraining(ctx, resume, flags);

  const cfg = args.need("cfg");
  const overrides = trainOverrides({ flags, sets: args.strings("set") });
  const labels = Object.fromEntries(args.strings("label").map((pair) => parseKeyValue(pair, "--label", "train")));
  const experimentYaml = await readExperiment(ctx.resolvePath(cfg), cfg);
  const idempotencyKey = args.string("idempotency-key");
  const response = await ctx.trainer().startTraining({
    experimentYaml,
    overrides,
    labels,
    signal: ctx.signal,
    ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
  });
  const job = response.job;
  if (job === undefined) throw new AppError(Code.INTERNAL, "the trainer accepted the job without describing it");

  if (ctx.json) {
    const document = protoJson(StartTrainingResponseSchema, response);
    if (args.flag("detach")) writeJsonDocument(ctx.out, document);
    else writeJsonLine(ctx.out, { type: "started", existing: response.existing, job: protoJson(JobSchema, job) });
  } else {
    const name = job.config?.name ?? "";
    const started = response.existing
      ? `job ${job.jobId} already exists for idempotency key "${idempotencyKey ?? ""}" (${jobStateName(job.state)})`
      : `job ${job.jobId} ${jobStateName(job.state).toLowerCase()}${name === "" ? "" : `: ${name}`}`;
    // Detached, the job is the result; followed, the result is its outcome and this is news on the way.
    (args.flag("detach") ? ctx.out : ctx.err).line(started);
  }
  if (args.flag("detach")) return ExitCode.OK;
  if (!ctx.json) ctx.err.line(`following job ${job.jobId} (Ctrl-C stops following; the job goes on)`);
  return followJob(ctx, job.jobId);
}

async function resumeTraining(ctx: CommandContext, jobId: string, flags: Partial<Record<TrainFlag, string>>): Promise<number> {
  const { args } = ctx;
  // ResumeJob continues a job as it was configured; only its end epoch can change. Refuse what it cannot
  // honour instead of dropping it.
  const refused = [
    ...(args.has("cfg") ? ["--cfg"] : []),
    ...(Object.keys(flags) as TrainFlag[]).filter((flag) => flag !== "epochs").map((flag) => `--${flag}`),
    ...(args.has("set") ? ["--set"] : []),
    ...(args.has("label") ? ["--label"] : []),
    ...(args.has("idempotency-key") ? ["--idempotency-key"] : []),
  ];
  if (refused.length > 0) {
    throw new UsageError(`--resume continues job ${jobId} as it was configured; only --epochs can change (not ${refused.join(", ")})`, "train");
  }
  const endEpoch = args.int("epochs", 1);
  const job = await ctx.trainer().resumeJob(jobId, { signal: ctx.signal, ...(endEpoch === undefined ? {} : { endEpoch }) });
  if (ctx.json) {
    if (args.flag("detach")) writeJsonDocument(ctx.out, protoJson(JobSchema, job));
    else writeJsonLine(ctx.out, { type: "resumed", job: protoJson(JobSchema, job) });
  } else {
    const from = job.lastCheckpoint === undefined ? "" : ` from checkpoint ${job.lastCheckpoint.checkpointId}`;
    (args.flag("detach") ? ctx.out : ctx.err).line(`job ${job.jobId} ${jobStateName(job.state).toLowerCase()} again${from} (attempt ${job.attempt})`);
  }
  if (args.flag("detach")) return ExitCode.OK;
  return followJob(ctx, job.jobId);
}

export async function readExperiment(path: string, shown: string): Promise<string> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new AppError(Code.INVALID_ARGUMENT, `experiment file ${shown} is not a file`);
    if (info.size > MAX_EXPERIMENT_BYTES) throw new AppError(Code.INVALID_ARGUMENT, `experiment file ${shown} is ${info.size} bytes; an experiment file is YAML of at most 1 MiB`);
    const text = await readFile(path, "utf8");
    if (text.trim() === "") throw new AppError(Code.INVALID_ARGUMENT, `experiment file ${shown} is empty`);
    return text;
  } catch (error) {
    if (error instanceof AppError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new AppError(Code.NOT_FOUND, `experiment file ${shown} not found`, { cause: error });
    if (code === "EACCES" || code === "EPERM") throw new AppError(Code.PERMISSION_DENIED, `experiment file ${shown} cannot be read (permission denied)`, { cause: error });
    throw new AppError(Code.INTERNAL, `cannot read experiment file ${shown}: ${(error as Error).message}`, { cause: error });
  }
}
