import { SweepState, TrialState, type Sweep, type SweepTrial } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { formatTable, timestampText } from "./job-format.js";

/** "running", "stopped early", ... */
export function trialStateName(state: TrialState): string {
  return (TrialState[state] ?? "UNSPECIFIED").toLowerCase().replace(/_/g, " ");
}

export function sweepStateName(state: SweepState): string {
  return (SweepState[state] ?? "UNSPECIFIED").toLowerCase();
}

/** "TRAIN.LR=0.001 TRAIN.BATCH_SIZE_PER_GPU=16": the trial's own values. */
export function trialValues(trial: SweepTrial): string {
  return Object.entries(trial.values)
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
}

const ap = (value: number): string => value.toFixed(3);

/**
 * What changed between two snapshots of a sweep, as lines a person follows: trials queued, epochs validated,
 * trials stopped early or ended, stages that start with the values the earlier ones fixed, the end.
 */
export function sweepChanges(before: Sweep | undefined, after: Sweep): string[] {
  const lines: string[] = [];
  if (before !== undefined && after.currentStage !== before.currentStage && after.stages.length > 1) {
    const stage = after.stages[after.currentStage];
    const fixed = Object.entries(after.fixed).map(([key, value]) => `${key}=${value}`).join(" ");
    lines.push(`stage ${after.currentStage + 1}/${after.stages.length} (${stage?.name ?? ""}) starts with ${fixed === "" ? "nothing fixed" : fixed}`);
  }
  for (const trial of after.trials) {
    const was = before?.trials[trial.index];
    const name = `trial ${trial.index} (${trialValues(trial)})`;
    if (trial.jobId !== "" && was?.jobId !== trial.jobId) lines.push(`${name}: job ${trial.jobId}`);
    trial.epochs.forEach((epoch, i) => {
      if (was?.epochs.includes(epoch) === true) return;
      lines.push(`${name}: epoch ${epoch} AP ${ap(trial.aps[i] ?? 0)}`);
    });
    if (trial.state !== (was?.state ?? TrialState.PENDING) && trial.state !== TrialState.RUNNING && trial.state !== TrialState.PENDING) {
      const why = trial.stopReason === "" ? "" : `: ${trial.stopReason}`;
      lines.push(`${name} ${trialStateName(trial.state)}${why}`);
    }
  }
  if (after.state !== SweepState.RUNNING && before?.state !== after.state) {
    lines.push(`sweep ${after.sweepId} ${sweepStateName(after.state)}${after.message === "" ? "" : `: ${after.message}`}`);
  }
  return lines;
}

export const SWEEP_TABLE_HEADER = ["", "TRIAL", "STAGE", "VALUES", "BEST AP", "AT EPOCH", "EPOCHS", "STATUS"] as const;

/**
 * The summary: a row per trial sorted by best AP (those without one last, in trial order), the best marked
 * with "*", then the values the sweep settled on.
 */
export function sweepSummary(sweep: Sweep): string[] {
  const sorted = [...sweep.trials].sort((a, b) => {
    const x = a.aps.length === 0 ? -Infinity : a.bestAp;
    const y = b.aps.length === 0 ? -Infinity : b.bestAp;
    return y - x || a.index - b.index;
  });
  const rows = sorted.map((trial) => [
    trial.index === sweep.bestTrial ? "*" : "",
    String(trial.index),
    sweep.stages[trial.stage]?.name ?? String(trial.stage + 1),
    trialValues(trial),
    trial.aps.length === 0 ? "" : ap(trial.bestAp),
    trial.aps.length === 0 ? "" : String(trial.bestEpoch),
    String(trial.epochsRun),
    trialStateName(trial.state),
  ]);
  const lines = formatTable(SWEEP_TABLE_HEADER, rows);
  const best = sweep.trials[sweep.bestTrial];
  if (best !== undefined) {
    const fixed = Object.entries(sweep.fixed).map(([key, value]) => `${key}=${value}`).join(" ");
    lines.push("", `best: trial ${best.index}, AP ${ap(best.bestAp)} at epoch ${best.bestEpoch} (job ${best.jobId})${fixed === "" ? "" : `; settled on ${fixed}`}`);
  }
  return lines;
}

export const SWEEP_LIST_HEADER = ["SWEEP", "STATE", "NAME", "STAGES", "TRIALS", "BEST AP", "CREATED"] as const;

export function sweepRow(sweep: Sweep): string[] {
  const best = sweep.trials[sweep.bestTrial];
  const done = sweep.trials.filter((t) => t.state !== TrialState.PENDING && t.state !== TrialState.RUNNING).length;
  return [sweep.sweepId, sweepStateName(sweep.state), sweep.name, sweep.stages.map((s) => s.name).join(","), `${done}/${sweep.trials.length}`, best === undefined ? "" : ap(best.bestAp), timestampText(sweep.createdAt)];
}
