import { EarlyStopRule, type EarlyStopping } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/** A trial's validation curve: AP at each validated epoch (1-based), in epoch order. */
export interface TrialCurve {
  readonly index: number;
  readonly epochs: readonly number[];
  readonly aps: readonly number[];
}

/** The early-stopping settings with their defaults applied. */
export interface StoppingRule {
  readonly rule: "none" | "median" | "asha";
  readonly graceEpochs: number;
  readonly minTrials: number;
  readonly minEpochs: number;
  readonly reductionFactor: number;
}

export function resolveStopping(settings: EarlyStopping | undefined): { rule: StoppingRule; problems: string[] } {
  const problems: string[] = [];
  const kind = settings?.rule ?? EarlyStopRule.UNSPECIFIED;
  const rule: StoppingRule = {
    rule: kind === EarlyStopRule.MEDIAN ? "median" : kind === EarlyStopRule.ASHA ? "asha" : "none",
    graceEpochs: settings?.graceEpochs || 1,
    minTrials: settings?.minTrials || 2,
    minEpochs: settings?.minEpochs || 1,
    reductionFactor: settings?.reductionFactor || 3,
  };
  if (!(kind in EarlyStopRule)) problems.push(`early_stopping.rule: ${kind} is not a rule (none, median, asha)`);
  if (rule.reductionFactor < 2) problems.push(`early_stopping.reduction_factor: ${rule.reductionFactor} must be at least 2`);
  return { rule, problems };
}

/** The best AP of a curve up to and including `epoch`, or undefined when it has none by then. */
function bestUpTo(curve: TrialCurve, epoch: number): number | undefined {
  let best: number | undefined;
  curve.epochs.forEach((e, i) => {
    const ap = curve.aps[i];
    if (e <= epoch && ap !== undefined && (best === undefined || ap > best)) best = ap;
  });
  return best;
}

function apAt(curve: TrialCurve, epoch: number): number | undefined {
  const i = curve.epochs.indexOf(epoch);
  return i < 0 ? undefined : curve.aps[i];
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The rungs of ASHA up to `endEpoch`: r, r·η, r·η², ... */
export function ashaRungs(rule: StoppingRule, endEpoch: number): number[] {
  const rungs: number[] = [];
  for (let rung = rule.minEpochs; rung < endEpoch; rung *= rule.reductionFactor) rungs.push(rung);
  return rungs;
}

/**
 * Whether `trial`, which has just validated `epoch`, should stop, judged against the other trials of its stage
 * (`others`, whatever their state: a stopped trial's curve still counts for the epochs it ran). Returns the
 * reason to record, or undefined to go on. Called once per new validated epoch of a trial, so each rung of
 * ASHA is judged once per trial.
 */
export function stopDecision(rule: StoppingRule, trial: TrialCurve, epoch: number, others: readonly TrialCurve[], endEpoch: number): string | undefined {
  if (rule.rule === "median") {
    if (epoch < rule.graceEpochs || epoch >= endEpoch) return undefined;
    const mine = bestUpTo(trial, epoch);
    const theirs = others.map((o) => (o.epochs.some((e) => e >= epoch) ? bestUpTo(o, epoch) : undefined)).filter((ap): ap is number => ap !== undefined);
    if (mine === undefined || theirs.length < rule.minTrials) return undefined;
    const bar = median(theirs);
    return mine < bar ? `median rule: best AP ${mine.toFixed(3)} by epoch ${epoch} is below the median ${bar.toFixed(3)} of ${theirs.length} other trials at that epoch` : undefined;
  }
  if (rule.rule === "asha") {
    if (!ashaRungs(rule, endEpoch).includes(epoch)) return undefined;
    const mine = apAt(trial, epoch);
    const recorded = others.map((o) => apAt(o, epoch)).filter((ap): ap is number => ap !== undefined);
    if (mine === undefined || recorded.length + 1 < rule.reductionFactor) return undefined;
    const all = [...recorded, mine].sort((a, b) => b - a);
    const keep = Math.max(1, Math.floor(all.length / rule.reductionFactor));
    const cutoff = all[keep - 1] ?? mine;
    return mine < cutoff ? `ASHA: AP ${mine.toFixed(3)} at rung epoch ${epoch} is outside the top ${keep} of ${all.length} (cutoff ${cutoff.toFixed(3)}, η=${rule.reductionFactor})` : undefined;
  }
  return undefined;
}
