import { randomBytes } from "node:crypto";
import { SpanKind } from "@opentelemetry/api";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PromotionMode, PromotionVerdict } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { AppError, Code, sleep } from "@poseloop/core";
import { installTestTelemetry, linkTo } from "@poseloop/telemetry";
import { take, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelRegistry, RegistryBuckets, sha256Digest, type Bus, type JobDelivery } from "../index.js";

/** How one backend is set up for the shared suite. */
export interface BusHarness {
  /** A new client of the same bus (a new connection for NATS; the same directory for the embedded bus). */
  connect(): Promise<Bus>;
  /** Changes the stored bytes of a blob behind the registry's back, keeping its recorded digest. */
  corruptBlob(bucket: string, name: string): Promise<void>;
}

function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

function manifestFor(name: string, jobId = "job-1") {
  return { model: { name }, architecture: "lite", trainingJobId: jobId, precision: Precision.INT8, outputNames: ["heatmaps"] };
}

/** The behaviour every Bus implementation must have, run against NATS and against the embedded bus. */
export function describeBusContract(label: string, harness: () => BusHarness): void {
  describe(`${label}: ModelRegistry`, () => {
    let bus: Bus;
    let registry: ModelRegistry;
    beforeAll(async () => {
      bus = await harness().connect();
      registry = await ModelRegistry.open(bus);
    });
    afterAll(async () => bus.close());

    it("stores and reads back a 64 MB artifact, verifying its digest", async () => {
      const data = randomBytes(64 * 1024 * 1024);
      const name = `${uniqueName("big")}/v1/model.onnx`;
      const artifact = await registry.putArtifact(name, data, Precision.FP32);
      expect(artifact.digest).toBe(sha256Digest(data));
      expect(artifact.sizeBytes).toBe(BigInt(data.byteLength));
      const back = await registry.getArtifact(name, { expectedDigest: artifact.digest });
      expect(back.byteLength).toBe(data.byteLength);
      expect(Buffer.from(back).equals(data)).toBe(true);
    });

    it("fails with DATA_LOSS when the stored bytes or the expected digest do not match", async () => {
      const name = `${uniqueName("corrupt")}/v1/model.onnx`;
      const data = randomBytes(3 * 1024 * 1024 + 123);
      const artifact = await registry.putArtifact(name, data, Precision.FP32);
      await expect(registry.getArtifact(name, { expectedDigest: sha256Digest(Buffer.from("other")) })).rejects.toSatisfy((e) =>
        AppError.is(e, Code.DATA_LOSS),
      );
      await harness().corruptBlob(RegistryBuckets.artifacts, name);
      await expect(registry.getArtifact(name, { expectedDigest: artifact.digest })).rejects.toSatisfy((e) => AppError.is(e, Code.DATA_LOSS));
      await expect(registry.getArtifact(`${uniqueName("missing")}/v1/x`)).rejects.toSatisfy((e) => AppError.is(e, Code.NOT_FOUND));
    });

    it("publishes versions, refuses a stale compare-and-set, and rolls back through history", async () => {
      const name = uniqueName("model");
      const files = (seed: string) => [
        { file: "model.onnx", data: Buffer.from(`fp32-${seed}`), precision: Precision.FP32 },
        { file: "model.int8.onnx", data: Buffer.from(`int8-${seed}`), precision: Precision.INT8 },
      ];
      const first = await registry.publish({ manifest: manifestFor(name), files: files("a"), servingFile: "model.int8.onnx", promote: true, setBy: "job-1" });
      expect(first.manifest.model?.digest).toBe(sha256Digest(Buffer.from("int8-a")));
      expect(first.manifest.artifacts.map((a) => a.objectName)).toEqual([
        `${name}/${first.manifest.model?.version}/model.onnx`,
        `${name}/${first.manifest.model?.version}/model.int8.onnx`,
      ]);
      const afterFirst = await registry.getServing(name);
      expect(afterFirst?.record.model?.version).toBe(first.manifest.model?.version);

      await sleep(5);
      const second = await registry.publish({ manifest: manifestFor(name, "job-2"), files: files("b"), servingFile: "model.int8.onnx", promote: true, setBy: "job-2" });
      expect((await registry.getServing(name))?.record.model?.version).toBe(second.manifest.model?.version);

      // A writer still holding the first revision loses.
      await expect(
        registry.setServing(name, first.manifest.model ?? {}, { expectedRevision: afterFirst?.revision ?? -1, setBy: "late" }),
      ).rejects.toSatisfy((e) => AppError.is(e, Code.ABORTED));

      expect((await registry.rollbackTarget(name))?.record.model?.version).toBe(first.manifest.model?.version);
      const { serving, previous } = await registry.rollback(name, { setBy: "operator" });
      expect(serving.record.model?.version).toBe(first.manifest.model?.version);
      expect(previous.record.model?.version).toBe(second.manifest.model?.version);
      expect((await registry.history(name)).map((entry) => entry.record.model?.version)).toEqual([
        first.manifest.model?.version,
        second.manifest.model?.version,
        first.manifest.model?.version,
      ]);
      const manifest = await registry.getManifest(name, second.manifest.model?.version ?? "");
      expect(manifest.trainingJobId).toBe("job-2");
      expect(await registry.listVersions(name)).toEqual([first.manifest.model?.version, second.manifest.model?.version].sort());
      await expect(registry.setServing(name, { version: "nope" }, { expectedRevision: serving.revision, setBy: "x" })).rejects.toSatisfy((e) =>
        AppError.is(e, Code.FAILED_PRECONDITION),
      );
    });

    it("keeps a promotion policy, runs one trial at a time and logs every decision", async () => {
      const name = uniqueName("policy");
      expect(await registry.getPolicy(name)).toBeUndefined();
      await expect(
        registry.setPolicy(name, { mode: PromotionMode.CANARY, canaryFraction: 1.5, minMeanOks: 2, minApGain: 1 }, { setBy: "admin" }),
      ).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT) && /canary_fraction 1\.5/.test(String(e)) && /min_mean_oks 2/.test(String(e)) && /min_ap_gain 1/.test(String(e)));
      expect(await registry.getPolicy(name)).toBeUndefined();
      const policy = await registry.setPolicy(name, { mode: PromotionMode.CANARY }, { setBy: "admin" });
      expect(policy.canaryFraction).toBeGreaterThan(0);
      expect((await registry.getPolicy(name))?.windowFrames).toBe(policy.windowFrames);

      const files = [{ file: "m.onnx", data: Buffer.from("p"), precision: Precision.FP32 }];
      const baseline = await registry.publish({ manifest: manifestFor(name), files, servingFile: "m.onnx", promote: true, setBy: "t" });
      const candidate = await registry.publish({ manifest: manifestFor(name, "job-2"), files, servingFile: "m.onnx", promote: false, setBy: "job-2" });
      const trial = await registry.startTrial(name, candidate.manifest.model ?? {}, policy, { setBy: "job-2" });
      expect(trial.record.baseline?.version).toBe(baseline.manifest.model?.version);

      // Two inferencers reach a verdict on the same trial: only the first one decides.
      const first = await registry.concludeTrial(name, trial.revision, { verdict: PromotionVerdict.PROMOTED, reason: "agreed", decidedBy: "inferencer-a", agreement: { frames: 300n, meanOks: 0.97 } });
      const second = await registry.concludeTrial(name, trial.revision, { verdict: PromotionVerdict.ROLLED_BACK, reason: "late", decidedBy: "inferencer-b" });
      expect(first?.verdict).toBe(PromotionVerdict.PROMOTED);
      expect(second).toBeUndefined();
      expect((await registry.getServing(name))?.record.model?.version).toBe(candidate.manifest.model?.version);
      expect((await registry.getCandidate(name))?.record.model).toBeUndefined();
      expect((await registry.decisions(name)).map((d) => [PromotionVerdict[d.verdict], d.decidedBy])).toEqual([
        ["TRIAL_STARTED", "job-2"],
        ["PROMOTED", "inferencer-a"],
      ]);
    });

    it("streams serving changes to watchers", async () => {
      const name = uniqueName("watched");
      const controller = new AbortController();
      const seen: string[] = [];
      const watching = (async () => {
        for await (const entry of registry.watchServing(name, controller.signal)) {
          seen.push(entry.record.model?.version ?? "");
          if (seen.length === 2) break;
        }
      })();
      const files = [{ file: "m.onnx", data: Buffer.from("x"), precision: Precision.FP32 }];
      const a = await registry.publish({ manifest: manifestFor(name), files, servingFile: "m.onnx", promote: true, setBy: "t" });
      await waitFor(() => seen.length >= 1, { what: "the first serving change" });
      const b = await registry.publish({ manifest: manifestFor(name), files, servingFile: "m.onnx", promote: true, setBy: "t" });
      await watching;
      controller.abort();
      expect(seen).toEqual([a.manifest.model?.version, b.manifest.model?.version]);
    });

    it("carries the publish span's trace context to subscribers in the event headers", async () => {
      const telemetry = installTestTelemetry(`bus-${label}`);
      try {
        const name = uniqueName("traced");
        const controller = new AbortController();
        const received = take(registry.subscribePublished(name, controller.signal), 1);
        await sleep(300); // subscription established (the embedded bus polls)
        const files = [{ file: "m.onnx", data: Buffer.from("y"), precision: Precision.FP32 }];
        const published = await registry.publish({ manifest: manifestFor(name, "job-traced"), files, servingFile: "m.onnx", promote: false, setBy: "t" });
        const [message] = await received;
        controller.abort();
        expect(message?.event.manifest?.model?.version).toBe(published.manifest.model?.version);
        expect(message?.event.promoted).toBe(false);

        const publishSpan = telemetry.spansNamed("registry.publish")[0];
        expect(publishSpan?.kind).toBe(SpanKind.PRODUCER);
        const link = linkTo(message?.context ?? (undefined as never));
        const consumer = telemetry.tracer().startSpan("model.load", { kind: SpanKind.CONSUMER, links: link === undefined ? [] : [link] });
        consumer.end();
        const loaded = telemetry.spansNamed("model.load")[0];
        expect(loaded?.links[0]?.context.traceId).toBe(publishSpan?.spanContext().traceId);
        expect(loaded?.links[0]?.context.spanId).toBe(publishSpan?.spanContext().spanId);
        // The serving record keeps the same context for consumers that only watch the registry.
        const other = await registry.publish({ manifest: manifestFor(name), files, servingFile: "m.onnx", promote: true, setBy: "t" });
        const serving = await registry.getServing(name);
        expect(serving?.record.traceContext["traceparent"]).toContain(telemetry.spansNamed("registry.publish")[1]?.spanContext().traceId);
        expect(other.serving?.revision).toBe(serving?.revision);
      } finally {
        await telemetry.shutdown();
      }
    });
  });

  describe(`${label}: JobQueue`, () => {
    const ackWaitMs = 1_500;
    let a: Bus;
    let b: Bus;
    beforeAll(async () => {
      a = await harness().connect();
      b = await harness().connect();
    });
    afterAll(async () => {
      await a.close();
      await b.close();
    });

    it("delivers each job to exactly one of two consumers", async () => {
      const queueName = uniqueName("q");
      const producer = await a.jobQueue(queueName, { ackWaitMs });
      const consumers = [await a.jobQueue(queueName, { ackWaitMs }), await b.jobQueue(queueName, { ackWaitMs })];
      const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`);
      for (const id of ids) await producer.enqueue({ id, data: Buffer.from(id), headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } });
      const got: string[][] = [[], []];
      await Promise.all(
        consumers.map(async (queue, index) => {
          for (;;) {
            const job = await queue.next({ waitMs: 1_000 });
            if (job === undefined) return;
            expect(Buffer.from(job.data).toString()).toBe(job.id);
            expect(job.headers["traceparent"]).toContain("0af7651916cd43dd8448eb211c80319c");
            got[index]?.push(job.id);
            await sleep(20);
            await job.ack();
          }
        }),
      );
      expect([...(got[0] ?? []), ...(got[1] ?? [])].sort()).toEqual([...ids].sort());
      expect(got[0]?.length).toBeGreaterThan(0);
      expect(got[1]?.length).toBeGreaterThan(0);
    });

    it("redelivers the job of a consumer that died without ack to another one after the ack wait", async () => {
      const queueName = uniqueName("q");
      const dying = await harness().connect();
      const survivor = await b.jobQueue(queueName, { ackWaitMs });
      await (await a.jobQueue(queueName, { ackWaitMs })).enqueue({ id: "train-1", data: Buffer.from("payload") });
      const first = await (await dying.jobQueue(queueName, { ackWaitMs })).next({ waitMs: 2_000 });
      expect(first?.id).toBe("train-1");
      expect(first?.deliveryCount).toBe(1);
      const diedAt = Date.now();
      await dying.close(); // gone without ack

      let again: JobDelivery | undefined;
      while (again === undefined && Date.now() - diedAt < ackWaitMs * 6) again = await survivor.next({ waitMs: 500 });
      expect(again?.id).toBe("train-1");
      expect(again?.deliveryCount).toBe(2);
      expect(Date.now() - diedAt).toBeGreaterThanOrEqual(ackWaitMs - 300);
      await again?.ack();
      expect(await survivor.next({ waitMs: ackWaitMs + 500 })).toBeUndefined();
    });

    it("keeps a job leased while its consumer heartbeats, and queues a repeated id once", async () => {
      const queueName = uniqueName("q");
      const producer = await a.jobQueue(queueName, { ackWaitMs });
      await producer.enqueue({ id: "long", data: Buffer.from("x") });
      await producer.enqueue({ id: "long", data: Buffer.from("x") });
      const worker = await a.jobQueue(queueName, { ackWaitMs });
      const other = await b.jobQueue(queueName, { ackWaitMs });
      const job = await worker.next({ waitMs: 2_000 });
      expect(job?.id).toBe("long");
      const until = Date.now() + ackWaitMs * 2.5;
      while (Date.now() < until) {
        await job?.heartbeat();
        expect(await other.next({ waitMs: 300 })).toBeUndefined();
      }
      await job?.ack();
      expect(await other.next({ waitMs: ackWaitMs + 500 })).toBeUndefined();
    });

    it("delivers a job that keeps failing at most maxDeliveries times, then never again", async () => {
      const queueName = uniqueName("q");
      const queue = await a.jobQueue(queueName, { ackWaitMs, maxDeliveries: 3 });
      expect(queue.maxDeliveries).toBe(3);
      await queue.enqueue({ id: "poison", data: Buffer.from("x") });
      const counts: number[] = [];
      for (let i = 0; i < 5; i++) {
        const job = await queue.next({ waitMs: 1_500 });
        if (job === undefined) break;
        counts.push(job.deliveryCount);
        await job.nak(0);
      }
      expect(counts).toEqual([1, 2, 3]);
      expect(await queue.next({ waitMs: ackWaitMs + 500 })).toBeUndefined();
    });
  });

  describe(`${label}: EventBus`, () => {
    it("delivers published messages with their headers to matching subscribers", async () => {
      const bus = await harness().connect();
      const other = await harness().connect();
      try {
        const controller = new AbortController();
        const token = uniqueName("t");
        const received = take((await other.events()).subscribe(`poseloop.events.${token}.*`, controller.signal), 2);
        await sleep(300);
        const events = await bus.events();
        await events.publish(`poseloop.events.${token}.one`, Buffer.from("1"), { "x-key": "v1" });
        await events.publish(`poseloop.events.other.one`, Buffer.from("no"));
        await events.publish(`poseloop.events.${token}.two`, Buffer.from("2"));
        const messages = await received;
        controller.abort();
        expect(messages.map((m) => [m.subject, Buffer.from(m.data).toString()])).toEqual([
          [`poseloop.events.${token}.one`, "1"],
          [`poseloop.events.${token}.two`, "2"],
        ]);
        expect(messages[0]?.headers["x-key"]).toBe("v1");
      } finally {
        await bus.close();
        await other.close();
      }
    });
  });
}
