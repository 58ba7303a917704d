import { metrics } from "@opentelemetry/api";
import { MeterProvider, MetricReader, type DataPoint, type MetricData } from "@opentelemetry/sdk-metrics";
import { silentLogger, type Logger } from "@poseloop/core";
import { create } from "@bufbuild/protobuf";
import { JobSchema, JobState, type Job } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { observeJobCounts, recordTrainingChunk, TRAINER_METER } from "./trainer-metrics.js";

class CollectingReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

function installProvider(): { reader: CollectingReader; provider: MeterProvider } {
  const reader = new CollectingReader();
  const provider = new MeterProvider({ readers: [reader] });
  metrics.disable();
  metrics.setGlobalMeterProvider(provider);
  return { reader, provider };
}

async function collect(reader: CollectingReader): Promise<MetricData[]> {
  const { resourceMetrics } = await reader.collect();
  return resourceMetrics.scopeMetrics.filter((scope) => scope.scope.name === TRAINER_METER).flatMap((scope) => scope.metrics);
}

function values(all: MetricData[], name: string): Record<string, number> {
  const points = all.filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as DataPoint<number>[]);
  return Object.fromEntries(points.map((p) => [String(p.attributes["state"] ?? ""), p.value]));
}

const jobs = (...states: JobState[]): Job[] => states.map((state, i) => create(JobSchema, { jobId: `job-20261205-1200${String(i).padStart(2, "0")}-abcdef`, state }));

/** A list() whose answers the test hands out one at a time. */
function pendingLists(): { list: () => Promise<readonly Job[]>; calls: () => number; answer: (result: readonly Job[] | Error) => void } {
  const waiting: { resolve: (jobs: readonly Job[]) => void; reject: (error: Error) => void }[] = [];
  let calls = 0;
  return {
    list: () => {
      calls++;
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    calls: () => calls,
    answer: (result) => {
      const next = waiting.shift();
      if (result instanceof Error) next?.reject(result);
      else next?.resolve(result);
    },
  };
}

describe("trainer metrics", () => {
  let reader: CollectingReader;
  let provider: MeterProvider;
  beforeEach(() => ({ reader, provider } = installProvider()));
  afterEach(async () => {
    metrics.disable();
    await provider.shutdown();
  });

  it("job counts: a collection never waits for the records; it starts a read and reports what the last one counted", async () => {
    const lists = pendingLists();
    const observer = observeJobCounts(lists.list, silentLogger, { maxAgeMs: 60_000 });
    // The read is pending: the collection answers at once, with no counts yet.
    expect(values(await collect(reader), "poseloop.trainer.jobs")).toEqual({});
    expect(lists.calls()).toBe(1);
    lists.answer(jobs(JobState.QUEUED, JobState.QUEUED, JobState.RUNNING, JobState.FAILED));
    await observer.refreshed();
    const all = await collect(reader);
    expect(values(all, "poseloop.trainer.jobs")).toEqual({ queued: 2, running: 1, cancelling: 0, cancelled: 0, succeeded: 0, failed: 1 });
    expect(values(all, "poseloop.trainer.queue.length")).toEqual({ "": 2 });
    // Within maxAgeMs, collections report the same counts without reading again.
    await collect(reader);
    expect(lists.calls()).toBe(1);
    observer.close();
  });

  it("job counts: older than maxAgeMs they are read again; a failed read is logged and keeps the last counts", async () => {
    const warnings: string[] = [];
    const logger: Logger = { ...silentLogger, warn: (message) => void warnings.push(message), child: () => logger };
    const lists = pendingLists();
    const observer = observeJobCounts(lists.list, logger, { maxAgeMs: 0 });
    await collect(reader);
    lists.answer(jobs(JobState.RUNNING));
    await observer.refreshed();
    await collect(reader);
    expect(lists.calls()).toBe(2);
    lists.answer(new Error("bus unavailable"));
    await observer.refreshed();
    expect(warnings).toHaveLength(1);
    expect(values(await collect(reader), "poseloop.trainer.jobs")).toMatchObject({ running: 1, queued: 0 });
    lists.answer(jobs(JobState.SUCCEEDED));
    await observer.refreshed();
    expect(values(await collect(reader), "poseloop.trainer.jobs")).toMatchObject({ running: 0, succeeded: 1 });
    // That collection started another read (maxAgeMs 0); once it is done, a collection would start one more.
    lists.answer(jobs());
    await observer.refreshed();
    observer.close();
    // Closed (the trainer stopped): collections no longer read the records.
    const calls = lists.calls();
    await collect(reader);
    expect(lists.calls()).toBe(calls);
  });

  it("a run's points: values that are not finite, and the LR of a chunk without a step, are no points", async () => {
    const run = { jobId: "job-20261205-120000-abcdef", modelName: "demo" };
    recordTrainingChunk(run, { steps: 0, loss: Number.NaN, lr: 0, gradNorm: Number.NaN, samples: 0, seconds: 0 });
    let names = (await collect(reader)).map((m) => m.descriptor.name);
    expect(names).toEqual([]);
    recordTrainingChunk(run, { steps: 2, loss: 0.25, lr: 1e-3, gradNorm: Number.NaN, samples: 16, seconds: 2 });
    const all = await collect(reader);
    names = all.map((m) => m.descriptor.name).sort();
    expect(names).toEqual(["poseloop.trainer.loss", "poseloop.trainer.lr", "poseloop.trainer.samples_per_second", "poseloop.trainer.steps"]);
    const point = (name: string): DataPoint<number> | undefined => all.find((m) => m.descriptor.name === name)?.dataPoints[0] as DataPoint<number> | undefined;
    expect(point("poseloop.trainer.samples_per_second")?.value).toBe(8);
    expect(point("poseloop.trainer.loss")?.attributes).toEqual({ "poseloop.job.id": run.jobId, "poseloop.model.name": "demo" });
  });

  it("instruments follow the global MeterProvider: points recorded before the SDK started are lost, later ones are not", async () => {
    const run = { jobId: "job-20261205-120000-abcdef", modelName: "demo" };
    metrics.disable();
    recordTrainingChunk(run, { steps: 1, loss: 0.5, lr: 1e-3, gradNorm: 1, samples: 8, seconds: 1 });
    metrics.setGlobalMeterProvider(provider);
    recordTrainingChunk(run, { steps: 2, loss: 0.25, lr: 1e-3, gradNorm: 1, samples: 8, seconds: 1 });
    const steps = (await collect(reader)).find((m) => m.descriptor.name === "poseloop.trainer.steps");
    expect(steps?.dataPoints.map((p) => p.value)).toEqual([2]);
  });
});
