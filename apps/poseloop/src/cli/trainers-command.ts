import { AppError, Code } from "@poseloop/core";
import { GetTrainerInfoResponseSchema, type EngineCapability, type GetTrainerInfoResponse } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { Command } from "./command.js";
import { ExitCode } from "./error-report.js";
import { formatTable } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";

export const TRAINER_TABLE_HEADER = ["TRAINER", "ENGINE", "VERSION", "DEVICES", "GPUS", "NOTE"] as const;

/**
 * One row per trainer and engine, the trainer that answered first, then the others by worker id. NOTE says
 * why an engine cannot run ("unavailable: <reason>"), or what it can do beyond the devices (bf16 autocast,
 * the NCCL and gloo backends, its interpreter); a trainer that takes no jobs says so on each of its rows.
 */
export function trainerRows(response: GetTrainerInfoResponse): string[][] {
  const others = [...response.others].sort((a, b) => a.workerId.localeCompare(b.workerId));
  const trainers = response.trainer === undefined ? others : [response.trainer, ...others];
  return trainers.flatMap((trainer) => {
    const apiOnly = trainer.maxConcurrentJobs === 0 ? ["API only, takes no jobs"] : [];
    if (trainer.engines.length === 0) return [[trainer.workerId, "", "", "", "", [...apiOnly, "no engines"].join("; ")]];
    return trainer.engines.map((engine) => [
      trainer.workerId,
      engine.name,
      engine.version,
      engine.devices.join(","),
      gpusText(engine),
      [...apiOnly, ...engineNotes(engine)].join("; "),
    ]);
  });
}

/** onnxruntime counts no GPUs (its CUDA and WebGPU show as devices), so a 0 there would mislead. */
function gpusText(engine: EngineCapability): string {
  if (!engine.available) return "";
  return engine.name === "pytorch" || engine.gpuCount > 0 ? String(engine.gpuCount) : "";
}

function engineNotes(engine: EngineCapability): string[] {
  if (!engine.available) return [`unavailable: ${engine.reason === "" ? "no reason given" : engine.reason}`];
  const features = [engine.bf16 ? "bf16" : "", engine.nccl ? "nccl" : "", engine.gloo ? "gloo" : ""].filter((feature) => feature !== "");
  return [features.join(", "), engine.python === "" ? "" : `python ${engine.python}`].filter((note) => note !== "");
}

export const trainersCommand: Command = {
  name: "trainers",
  summary: "List the live trainers and what each can train: engines, devices, GPUs.",
  synopsis: "",
  description: [
    "One row per trainer and engine: the trainer that answered first, then the other live trainers on its bus.",
    "A job runs only on a trainer whose engine (TRAIN.ENGINE) is available on the job's device (TRAIN.DEVICE);",
    "NOTE says why an engine is unavailable, or what it supports (bf16 autocast, the nccl and gloo backends).",
  ].join("\n"),
  positionals: { min: 0, max: 0 },
  examples: ["poseloop trainers", "poseloop trainers --json | jq -r '.trainer.engines[] | select(.available) | .name'"],
  options: {},
  async run(ctx) {
    const trainer = ctx.trainer();
    const response = await trainer.getTrainerInfo({ signal: ctx.signal }).catch((error: unknown) => {
      // A trainer from before engine placement has no GetTrainerInfo; say which one, not "method not found".
      if (!AppError.is(error, Code.UNIMPLEMENTED)) throw error;
      throw new AppError(Code.UNIMPLEMENTED, `the trainer at ${trainer.address} does not report its engines: ${error.message}`, { cause: error });
    });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(GetTrainerInfoResponseSchema, response));
      return ExitCode.OK;
    }
    const rows = trainerRows(response);
    if (rows.length === 0) ctx.err.line("no trainers");
    else ctx.out.lines(formatTable(TRAINER_TABLE_HEADER, rows));
    return ExitCode.OK;
  },
};
