import type { CocoKeypointStats } from "@poseloop/pose";

/** One logged training chunk: the mean loss over its micro-batches and the LR of its last step. */
export interface StepPoint {
  /** Optimizer steps taken after the chunk. */
  readonly step: number;
  /** The epoch it trained in, counted from 1. */
  readonly epoch: number;
  readonly loss: number;
  readonly lr: number;
}

/** Validation numbers of one epoch, as KeypointMetrics has them (-1 where COCOeval reports no ground truth). */
export interface EpochValidation extends Omit<CocoKeypointStats, "arMedium" | "arLarge"> {
  readonly seconds: number;
}

/** One row of results.csv. */
export interface EpochRow {
  /** Epochs completed, counted from 1 (the number validation events and checkpoints carry). */
  readonly epoch: number;
  /** Optimizer steps taken at the epoch's end. */
  readonly step: number;
  /** Mean loss over the epoch's micro-batches. */
  readonly trainLoss: number;
  /** The LR of the epoch's last step. */
  readonly lr: number;
  /** Seconds spent training (validation apart) and samples trained per second of them. */
  readonly trainSeconds: number;
  readonly samplesPerSecond: number;
  /** Set when the epoch was validated. */
  validation?: EpochValidation;
}

/** Per-keypoint misses of the last validated epoch (see keypointErrors in @poseloop/pose). */
export interface KeypointMisses {
  readonly epoch: number;
  readonly keypoints: readonly { readonly name: string; readonly labelled: number; readonly missRate: number; readonly swapRate: number }[];
}

/**
 * Everything results.csv and the plots are drawn from. It travels in every checkpoint's header, so a resumed run
 * continues the same curves; `open` is the epoch in progress (a checkpoint can fall mid-epoch).
 */
export interface RunResultsState {
  readonly steps: readonly StepPoint[];
  readonly epochs: readonly EpochRow[];
  readonly open: { readonly lossSum: number; readonly batches: number; readonly samples: number; readonly seconds: number; readonly lr: number };
  readonly keypoints?: KeypointMisses;
}

/** What one `train` call did, as far as the curves are concerned. */
export interface ChunkRecord {
  readonly step: number;
  readonly epoch: number;
  /** Mean loss over the chunk's micro-batches. */
  readonly loss: number;
  readonly lr: number;
  readonly batches: number;
  readonly samples: number;
  readonly seconds: number;
}

/** The columns of results.csv, in order; a new one goes at the end so scripts that index columns keep working. */
export const RESULTS_CSV_COLUMNS = [
  "epoch",
  "step",
  "train_loss",
  "lr",
  "ap",
  "ap50",
  "ap75",
  "ap_medium",
  "ap_large",
  "ar",
  "ar50",
  "ar75",
  "train_s",
  "val_s",
  "samples_per_s",
] as const;

const EMPTY_OPEN = { lossSum: 0, batches: 0, samples: 0, seconds: 0, lr: 0 } as const;

/**
 * A run's curves: a point per logged chunk (loss and LR against the step) and a row per epoch (train loss, LR,
 * AP/AR, timings), accumulated as the run goes and rendered as results.csv. Pure: the run feeds it, the
 * checkpoint carries its state.
 */
export class RunResults {
  readonly #steps: StepPoint[];
  readonly #epochs: EpochRow[];
  #open: { lossSum: number; batches: number; samples: number; seconds: number; lr: number };
  #keypoints: KeypointMisses | undefined;

  constructor(state?: RunResultsState) {
    this.#steps = (state?.steps ?? []).map((s) => ({ ...s, loss: finite(s.loss), lr: finite(s.lr) }));
    this.#epochs = (state?.epochs ?? []).map((row) => ({ ...row, trainLoss: finite(row.trainLoss), ...(row.validation === undefined ? {} : { validation: { ...row.validation } }) }));
    this.#open = { ...EMPTY_OPEN, ...state?.open };
    this.#keypoints = state?.keypoints;
  }

  get steps(): readonly StepPoint[] {
    return this.#steps;
  }

  get epochs(): readonly EpochRow[] {
    return this.#epochs;
  }

  get keypoints(): KeypointMisses | undefined {
    return this.#keypoints;
  }

  /** A chunk of training; one without micro-batches (a cancel before the first) leaves no point. */
  recordChunk(chunk: ChunkRecord): void {
    if (chunk.batches <= 0) return;
    this.#steps.push({ step: chunk.step, epoch: chunk.epoch, loss: chunk.loss, lr: chunk.lr });
    this.#open.lossSum += chunk.loss * chunk.batches;
    this.#open.batches += chunk.batches;
    this.#open.samples += chunk.samples;
    this.#open.seconds += chunk.seconds;
    this.#open.lr = chunk.lr;
  }

  /** Closes the epoch in progress as row `epoch` (epochs completed). */
  endEpoch(epoch: number, step: number): void {
    const o = this.#open;
    this.#epochs.push({
      epoch,
      step,
      trainLoss: o.batches === 0 ? Number.NaN : o.lossSum / o.batches,
      lr: o.lr,
      trainSeconds: o.seconds,
      samplesPerSecond: o.seconds > 0 ? o.samples / o.seconds : 0,
    });
    this.#open = { ...EMPTY_OPEN };
  }

  /** The validation of epoch `epoch`'s weights; a validation of an epoch without a row is ignored. */
  recordValidation(epoch: number, validation: EpochValidation, keypoints?: KeypointMisses["keypoints"]): void {
    const row = this.#epochs.findLast((r) => r.epoch === epoch);
    if (row === undefined) return;
    row.validation = { ...validation };
    if (keypoints !== undefined) this.#keypoints = { epoch, keypoints: keypoints.map((k) => ({ ...k })) };
  }

  /** The state for a checkpoint: plain JSON (a non-finite number is written as null and read back as NaN). */
  state(): RunResultsState {
    return {
      steps: this.#steps.map((s) => ({ ...s })),
      epochs: this.#epochs.map((row) => ({ ...row, ...(row.validation === undefined ? {} : { validation: { ...row.validation } }) })),
      open: { ...this.#open },
      ...(this.#keypoints === undefined ? {} : { keypoints: this.#keypoints }),
    };
  }

  /** results.csv: the header, then a row per epoch; an epoch that was not validated has empty AP/AR cells. */
  csv(): string {
    const lines = [RESULTS_CSV_COLUMNS.join(",")];
    for (const row of this.#epochs) {
      const v = row.validation;
      const metric = (value: number | undefined): string => (v === undefined || value === undefined ? "" : fixed(value, 4));
      lines.push(
        [
          String(row.epoch),
          String(row.step),
          significant(row.trainLoss),
          significant(row.lr),
          metric(v?.ap),
          metric(v?.ap50),
          metric(v?.ap75),
          metric(v?.apMedium),
          metric(v?.apLarge),
          metric(v?.ar),
          metric(v?.ar50),
          metric(v?.ar75),
          fixed(row.trainSeconds, 2),
          v === undefined ? "" : fixed(v.seconds, 2),
          fixed(row.samplesPerSecond, 1),
        ].join(","),
      );
    }
    return `${lines.join("\n")}\n`;
  }
}

/** JSON turns NaN into null; a state read back from a checkpoint turns it back. */
function finite(value: number | null): number {
  return value === null ? Number.NaN : value;
}

/** Six significant digits, as short as they go: 0.00123457, 1e-7, 2.5. */
function significant(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toPrecision(6))) : "nan";
}

function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "nan";
}
