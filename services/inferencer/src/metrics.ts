import { metrics, type Counter, type Histogram, type Meter, type ObservableGauge, type UpDownCounter } from "@opentelemetry/api";

/**
 * The inferencer's instruments (meter `@poseloop/inferencer`), one definition each; the components record them
 * where the facts are. Each is created when its component is, not at import: the global MeterProvider exists
 * only once the service's telemetry has started (before that, and without a metrics exporter, they are no-ops).
 */
export const InferencerMetric = {
  frames: "poseloop.inferencer.frames",
  frameDuration: "poseloop.inferencer.frame.duration",
  batchSize: "poseloop.inferencer.batch.size",
  queueDepth: "poseloop.inferencer.queue.depth",
  streamsActive: "poseloop.inferencer.streams.active",
  swapDuration: "poseloop.inferencer.model.swap.duration",
  loadFailures: "poseloop.inferencer.model.load.failures",
  serving: "poseloop.inferencer.model.serving",
} as const;

/** What became of a frame: answered, answered with an error status, or dropped unanswered (latest-frame-wins). */
export type FrameOutcomeLabel = "ok" | "error" | "dropped";

/**
 * Stages of a frame's latency. `pose` is the pose model with its crops (preprocessing) and `post` the keypoint
 * decoding; `detect` is the person detector (letterbox, model, box decoding and NMS), sampled only for frames
 * whose people it found (POSELOOP_DETECTOR_MODEL; frames with client boxes or the whole frame skip it).
 */
export type FrameStage = "decode" | "detect" | "pose" | "post" | "total";

// Frame stages run from tens of microseconds (decoding a small JPEG) to seconds (a 4K PNG on a busy pool).
const FRAME_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5];
const BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256];
const SWAP_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

function meter(): Meter {
  return metrics.getMeter("@poseloop/inferencer");
}

export function framesCounter(): Counter {
  return meter().createCounter(InferencerMetric.frames, { unit: "{frame}", description: "Frames by outcome: ok, error (answered with an error status) or dropped (superseded, never answered)" });
}

export function frameDurationHistogram(): Histogram {
  return meter().createHistogram(InferencerMetric.frameDuration, {
    unit: "s",
    description: "Frame latency by stage: decode, detect (person detector), pose (crops and model), post (keypoint decoding), total (as FrameResult.timings.total_us: queueing included)",
    advice: { explicitBucketBoundaries: FRAME_BUCKETS_S },
  });
}

export function batchSizeHistogram(): Histogram {
  return meter().createHistogram(InferencerMetric.batchSize, { unit: "{frame}", description: "Frames per batch sent to an inference worker", advice: { explicitBucketBoundaries: BATCH_BUCKETS } });
}

export function queueDepthGauge(): ObservableGauge {
  return meter().createObservableGauge(InferencerMetric.queueDepth, { unit: "{frame}", description: "Frames waiting for a batch" });
}

export function activeStreamsCounter(): UpDownCounter {
  return meter().createUpDownCounter(InferencerMetric.streamsActive, { unit: "{stream}", description: "Open StreamKeypoints calls" });
}

export function swapDurationHistogram(): Histogram {
  return meter().createHistogram(InferencerMetric.swapDuration, {
    unit: "s",
    description: "From a new serving version's announcement to the swap: fetch, digest check, load and warm-up in every worker",
    advice: { explicitBucketBoundaries: SWAP_BUCKETS_S },
  });
}

export function loadFailuresCounter(): Counter {
  return meter().createCounter(InferencerMetric.loadFailures, { description: "Model versions that failed to load (the serving version kept serving)" });
}

export function servingGauge(): ObservableGauge {
  return meter().createObservableGauge(InferencerMetric.serving, { description: "1 for the model version this inferencer serves, labelled by name and version" });
}
