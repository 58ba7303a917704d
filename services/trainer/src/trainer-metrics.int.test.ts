import { metrics, type Attributes } from "@opentelemetry/api";
import { DataPointType, MeterProvider, MetricReader, type DataPoint, type Histogram, type MetricData } from "@opentelemetry/sdk-metrics";
import { NatsServer, makeTempDir, waitFor } from "@poseloop/testkit";
import { ScheduleKind } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";
import { TRAINER_METER } from "./trainer-metrics.js";

// A nats-server of this file's own: trainers on one bus share the training queue.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());

/** A reader that collects when asked, as a Prometheus scrape does. */
class CollectingReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

describe("trainer metrics", () => {
  const reader = new CollectingReader();
  const provider = new MeterProvider({ readers: [reader] });
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  let jobId = "";
  let events: JobEvent[] = [];
  let wallSeconds = 0;

  /** The trainer's metrics as a reader sees them now. */
  async function collect(): Promise<MetricData[]> {
    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    return resourceMetrics.scopeMetrics.filter((scope) => scope.scope.name === TRAINER_METER).flatMap((scope) => scope.metrics);
  }

  function points<T = number>(all: MetricData[], name: string, where: Attributes = {}): DataPoint<T>[] {
    const found = all.filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as DataPoint<T>[]);
    return found.filter((point) => Object.entries(where).every(([key, value]) => point.attributes[key] === value));
  }

  beforeAll(async () => {
    // Before the trainer starts, as the service's SDK is (its observable gauges bind to the provider then).
    metrics.setGlobalMeterProvider(provider);
    dir = await makeTempDir("poseloop-trainer-metrics-");
    harness = await startTrainerHarness(nats.url, dir.path, { POSELOOP_PYTHON: "/bin/false" });
    const started = performance.now();
    const { job } = await harness.client.startTraining({ source: { case: "config", value: tinyTrainConfig({ publish: { modelName: "metered" }, endEpoch: 1, schedule: { kind: ScheduleKind.CONSTANT } }) } });
    jobId = job?.jobId ?? "";
    events = await jobEvents(harness.client, jobId);
    wallSeconds = (performance.now() - started) / 1000;
  });
  afterAll(async () => {
    await harness?.close();
    await dir?.remove();
    metrics.disable();
    await provider.shutdown();
  });

  it("the run's curves: loss, LR, grad norm and samples/s as the job's progress reported them, its steps and epoch time", async () => {
    const all = await collect();
    const run = { "poseloop.job.id": jobId, "poseloop.model.name": "metered" };
    const progress = events.flatMap((e) => (e.event.case === "progress" ? [e.event.value] : []));
    const last = progress.at(-1);
    expect(last).toBeDefined();
    expect(points(all, "poseloop.trainer.loss", run).map((p) => p.value)).toEqual([last?.loss]);
    expect(points(all, "poseloop.trainer.lr", run).map((p) => p.value)).toEqual([1e-3]);
    const [gradNorm] = points(all, "poseloop.trainer.grad_norm", run).map((p) => p.value);
    expect(gradNorm).toBeGreaterThan(0);
    expect(gradNorm).toBeCloseTo(last?.gradNorm ?? Number.NaN, 6);
    const [rate] = points(all, "poseloop.trainer.samples_per_second", run).map((p) => p.value);
    expect(rate).toBeGreaterThan(0);
    // One epoch's optimizer steps, the job's own count.
    expect(points(all, "poseloop.trainer.steps", run).map((p) => p.value)).toEqual([Number(last?.step)]);
    expect(Number(last?.step)).toBe(last?.stepsPerEpoch);
    const epochs = points<Histogram>(all, "poseloop.trainer.epoch.duration", run);
    expect(epochs.map((p) => p.value.count)).toEqual([1]);
    expect(epochs[0]?.value.sum).toBeGreaterThan(0);
    expect(epochs[0]?.value.sum).toBeLessThan(wallSeconds);
    expect(all.find((m) => m.descriptor.name === "poseloop.trainer.epoch.duration")?.descriptor.unit).toBe("s");
  });

  it("validation AP: the epoch's as the job reported it, and the fp32 and int8 APs of the published version", async () => {
    const all = await collect();
    const run = { "poseloop.job.id": jobId, "poseloop.model.name": "metered" };
    const validation = events.flatMap((e) => (e.event.case === "validation" ? [e.event.value] : []));
    const published = events.flatMap((e) => (e.event.case === "published" ? [e.event.value.manifest] : []))[0];
    expect(validation).toHaveLength(1);
    expect(published?.metrics).toBeDefined();
    const ap = points(all, "poseloop.trainer.validation.ap", run);
    expect(ap.filter((p) => p.attributes["precision"] === undefined).map((p) => p.value)).toEqual([validation[0]?.metrics?.ap]);
    expect(ap.filter((p) => p.attributes["precision"] === "fp32").map((p) => p.value)).toEqual([published?.fp32Metrics?.ap]);
    expect(ap.filter((p) => p.attributes["precision"] === "int8").map((p) => p.value)).toEqual([published?.metrics?.ap]);
    for (const point of ap) {
      expect(point.value).toBeGreaterThanOrEqual(0);
      expect(point.value).toBeLessThanOrEqual(1);
    }
  });

  it("job states: each transition counted once, and the jobs on the bus by state", async () => {
    const first = await collect();
    const transitions = points(first, "poseloop.trainer.job.transitions");
    expect(Object.fromEntries(transitions.map((p) => [String(p.attributes["state"]), p.value]))).toEqual({ queued: 1, running: 1, succeeded: 1 });
    // A monotonic sum: Prometheus gets a `_total` counter, so rate() works on it.
    const counter = first.find((m) => m.descriptor.name === "poseloop.trainer.job.transitions");
    expect(counter?.dataPointType === DataPointType.SUM && counter.isMonotonic).toBe(true);
    // The counts are read in the background when a collection asks; a later collection reports them.
    let all: MetricData[] = [];
    await waitFor(async () => {
      all = await collect();
      return points(all, "poseloop.trainer.jobs").length > 0;
    }, { what: "the job counts" });
    const byState = Object.fromEntries(points(all, "poseloop.trainer.jobs").map((p) => [String(p.attributes["state"]), p.value]));
    expect(byState).toEqual({ queued: 0, running: 0, cancelling: 0, cancelled: 0, succeeded: 1, failed: 0 });
    expect(points(all, "poseloop.trainer.queue.length").map((p) => p.value)).toEqual([0]);
  });
});
