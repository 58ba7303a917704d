import { metrics, type Counter, type Gauge } from "@opentelemetry/api";

/** Instruments of canary and shadow trials (meter `@poseloop/inferencer`). */
export const TrialMetric = {
  frames: "poseloop.inferencer.trial.frames",
  meanOks: "poseloop.inferencer.trial.mean_oks",
} as const;

export interface TrialInstruments {
  /** Frames each model ran for a trial's window; attributes `model` and `role` (candidate | serving). */
  readonly frames: Counter;
  /** The window's mean OKS of the candidate against the serving model so far; attribute `model`. */
  readonly meanOks: Gauge;
}

/** Created with the trial controller, not at import: the MeterProvider exists once telemetry has started. */
export function trialInstruments(): TrialInstruments {
  const meter = metrics.getMeter("@poseloop/inferencer");
  return {
    frames: meter.createCounter(TrialMetric.frames, { unit: "{frame}", description: "Frames run by each model of a canary or shadow trial and compared" }),
    meanOks: meter.createGauge(TrialMetric.meanOks, { unit: "1", description: "Mean OKS of a trial's candidate against the serving model over its window so far" }),
  };
}
