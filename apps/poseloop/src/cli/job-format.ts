import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { Precision, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import {
  CheckpointReason,
  JobState,
  type Checkpoint,
  type Job,
  type JobEvent,
  type ModelPublication,
  type QuantizationReport,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { formatDuration } from "./progress-format.js";
import { decisionSummaryText, publicationOutcomeText } from "./promotion-format.js";

/** "RUNNING", "SUCCEEDED", ... */
export function jobStateName(state: JobState): string {
  return JobState[state] ?? `STATE_${state}`;
}

/** States after which a job does nothing more until resumed. */
export function isFinalState(state: JobState): boolean {
  return state === JobState.SUCCEEDED || state === JobState.FAILED || state === JobState.CANCELLED;
}

/** "demo@20261127-231500-a1b2c3". */
export function modelRefText(ref: Pick<ModelRef, "name" | "version"> | undefined): string {
  if (ref === undefined || (ref.name === "" && ref.version === "")) return "none";
  return `${ref.name}@${ref.version}`;
}

/** An AP-style value in [0, 1] with three decimals; COCO's -1 (no ground truth) as "n/a". */
export function metricValue(value: number): string {
  return value < 0 ? "n/a" : value.toFixed(3);
}

/** "AP 0.712 (AP50 0.901, AP75 0.755, AR 0.760)", the figures a practitioner compares runs by. */
export function formatMetrics(metrics: KeypointMetrics | undefined): string {
  if (metrics === undefined) return "AP n/a";
  const rest = [`AP50 ${metricValue(metrics.ap50)}`, `AP75 ${metricValue(metrics.ap75)}`, `AR ${metricValue(metrics.ar)}`];
  if (metrics.pck > 0) rest.push(`PCK ${metricValue(metrics.pck)}`);
  return `AP ${metricValue(metrics.ap)} (${rest.join(", ")})`;
}

export function precisionName(precision: Precision): string {
  return precision === Precision.UNSPECIFIED ? "" : (Precision[precision] ?? "").toLowerCase();
}

/** "demo@v3 (int8, lite, AP 0.705)". */
export function manifestText(manifest: ModelManifest | undefined): string {
  if (manifest === undefined) return "none";
  const details = [precisionName(manifest.precision), manifest.architecture, manifest.metrics === undefined ? "" : `AP ${metricValue(manifest.metrics.ap)}`];
  const shown = details.filter((detail) => detail !== "");
  return `${modelRefText(manifest.model)}${shown.length > 0 ? ` (${shown.join(", ")})` : ""}`;
}

export function publicationText(publication: ModelPublication): string {
  // What the model's promotion policy decided, with both APs when it compared them.
  const where = publicationOutcomeText(publication.promoted, publication.decision);
  const from = publication.checkpointId === "" ? "" : ` from checkpoint ${publication.checkpointId}`;
  return `${manifestText(publication.manifest)}${from}: ${where}`;
}

function quantizationText(report: QuantizationReport): string {
  const verdict = report.passed ? "passed" : "FAILED";
  const attempts = report.attempts.map(
    (a) => `${a.strategy}${a.calibrator === "" ? "" : `/${a.calibrator}`} fp32 AP ${metricValue(a.fp32Ap)} int8 AP ${metricValue(a.int8Ap)}${a.passed ? " ok" : ""}`,
  );
  const limit = report.maxApDrop > 0 ? ` (max AP drop ${report.maxApDrop})` : "";
  const message = report.message === "" ? "" : `: ${report.message}`;
  return `int8 gate ${verdict}${limit}${message}${attempts.length > 0 ? ` [${attempts.join("; ")}]` : ""}`;
}

function checkpointReasonText(reason: CheckpointReason): string {
  switch (reason) {
    case CheckpointReason.EPOCH_END:
      return "epoch end";
    case CheckpointReason.TIMER:
      return "timer";
    case CheckpointReason.CANCEL:
      return "cancel";
    case CheckpointReason.FAILURE:
      return "kept after a failure";
    default:
      return "";
  }
}

/** The line for any event but progress (which has its own bar or line); undefined for progress. */
export function formatEvent(event: JobEvent): string | undefined {
  const e = event.event;
  switch (e.case) {
    case "progress":
    case undefined:
      return undefined;
    case "validation": {
      const best = e.value.isBest ? "  (new best)" : "";
      return `validation (epoch ${e.value.epoch}): ${formatMetrics(e.value.metrics)}${best}`;
    }
    case "checkpointSaved": {
      const checkpoint = e.value.checkpoint;
      if (checkpoint === undefined) return "checkpoint saved";
      const notes = [checkpointReasonText(checkpoint.reason), checkpoint.isBest ? "best" : ""].filter((n) => n !== "");
      return `checkpoint ${checkpoint.checkpointId} saved${notes.length > 0 ? ` (${notes.join(", ")})` : ""}`;
    }
    case "published":
      return `published ${publicationText(e.value)}`;
    case "stateChanged": {
      const reason = e.value.reason === "" ? "" : `: ${e.value.reason}`;
      const error = e.value.error === undefined || e.value.error.message === "" ? "" : ` (${e.value.error.message})`;
      return `job ${jobStateName(e.value.to)}${reason}${error}`;
    }
    case "warning":
      return `warning${e.value.code === "" ? "" : ` [${e.value.code}]`}: ${e.value.message}`;
    case "quantization":
      return quantizationText(e.value);
  }
}

export function timestampText(timestamp: Timestamp | undefined): string {
  if (timestamp === undefined) return "";
  return timestampDate(timestamp).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function seconds(from: Timestamp | undefined, to: Timestamp | undefined): number | undefined {
  if (from === undefined || to === undefined) return undefined;
  return (timestampDate(to).getTime() - timestampDate(from).getTime()) / 1000;
}

/** The closing lines of a followed job: its outcome, best validation, publications. */
export function formatJobSummary(job: Job): string[] {
  const took = seconds(job.startedAt, job.finishedAt);
  const lines = [`job ${job.jobId} ${jobStateName(job.state)}${took === undefined ? "" : ` after ${formatDuration(took)}`}`];
  if (job.error !== undefined && job.error.message !== "") lines.push(`  error: ${job.error.message}`);
  if (job.bestMetrics !== undefined) {
    const on = job.bestMetrics.dataset === "" ? "" : ` on ${job.bestMetrics.dataset}`;
    lines.push(`  best validation ${formatMetrics(job.bestMetrics)}${on} (epoch ${job.bestEpoch})`);
  } else {
    lines.push("  no validation yet");
  }
  if (job.published.length === 0) lines.push("  published nothing");
  for (const ref of job.published) {
    const decision = job.promotions.find((d) => d.candidate?.name === ref.name && d.candidate.version === ref.version);
    const outcome = decision === undefined ? undefined : decisionSummaryText(decision);
    lines.push(`  published ${modelRefText(ref)}${outcome === undefined ? "" : ` — ${outcome}`}`);
  }
  if (job.lastCheckpoint !== undefined) lines.push(`  last checkpoint ${job.lastCheckpoint.checkpointId}`);
  return lines;
}

/** Columns padded to their widest cell; the last column is left ragged. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

export function jobRow(job: Job): string[] {
  const progress = job.progress;
  const epoch = progress === undefined ? "" : progress.endEpoch > 0 ? `${Math.min(progress.epoch + 1, progress.endEpoch)}/${progress.endEpoch}` : String(progress.epoch + 1);
  return [
    job.jobId,
    jobStateName(job.state),
    epoch,
    job.bestMetrics === undefined ? "" : metricValue(job.bestMetrics.ap),
    job.published.length === 0 ? "" : modelRefText(job.published.at(-1)),
    timestampText(job.createdAt),
    // A sweep's trial says which sweep and trial it is (the trainer's own labels).
    `${job.config?.name ?? ""}${job.labels["poseloop.sweep_id"] === undefined ? "" : ` (${job.labels["poseloop.sweep_id"]} trial ${job.labels["poseloop.sweep_trial"] ?? "?"})`}`,
  ];
}

export const JOB_TABLE_HEADER = ["JOB", "STATE", "EPOCH", "BEST AP", "PUBLISHED", "CREATED", "NAME"] as const;

export function checkpointRow(checkpoint: Checkpoint): string[] {
  return [
    checkpoint.checkpointId,
    String(checkpoint.epoch),
    checkpoint.step.toString(),
    checkpointReasonText(checkpoint.reason),
    checkpoint.metrics === undefined ? "" : metricValue(checkpoint.metrics.ap),
    checkpoint.isBest ? "*" : "",
    formatBytes(Number(checkpoint.sizeBytes)),
    timestampText(checkpoint.createdAt),
  ];
}

export const CHECKPOINT_TABLE_HEADER = ["CHECKPOINT", "EPOCH", "STEP", "REASON", "AP", "BEST", "SIZE", "CREATED"] as const;

export function formatBytes(bytes: number): string {
  if (!(bytes > 0)) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
