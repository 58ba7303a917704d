import { AppError, Code, sleep } from "@poseloop/core";
import { RegistryBuckets } from "@poseloop/bus";
import { HealthCheckResponse_ServingStatus, Health } from "@poseloop/proto/grpc/health/v1/health_pb";
import { createClient } from "@poseloop/grpc";
import {
  DeliveryMode,
  ServingEventKind,
  ServingState,
  type Frame,
  type StreamKeypointsResponse,
  type WatchServingModelResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { jpegFrame, pacedJpegFrames, pngFrame, startHarness, streamRequests, plainPng, syntheticJpegs, type InferencerHarness } from "./testing/harness.js";
import { buildBrokenTestModel, buildTestModel, publishTestModel, type TestModel } from "./testing/test-models.js";

const natsUrl = inject("natsUrl");

let v1: TestModel;
let v2: TestModel;
let jpegs: Uint8Array[];

beforeAll(async () => {
  [v1, v2, jpegs] = await Promise.all([buildTestModel({ seed: 1 }), buildTestModel({ seed: 2 }), syntheticJpegs(12)]);
});

/** Frames 0..count-1 at `fps`, calling `at(i)` before frame i is sent. */
function paced(count: number, fps: number, at?: (i: number) => void): AsyncGenerator<Frame> {
  return pacedJpegFrames(jpegs, count, fps, at);
}

function results(responses: StreamKeypointsResponse[]) {
  return responses.flatMap((r) => (r.payload.case === "result" ? [r.payload.value] : []));
}

/** Collects WatchServingModel events in the background. */
function watchEvents(harness: InferencerHarness): { events: WatchServingModelResponse[]; stop: () => void } {
  const controller = new AbortController();
  const events: WatchServingModelResponse[] = [];
  void (async () => {
    for await (const event of harness.client.watchServingModel({}, { signal: controller.signal })) events.push(event);
  })().catch(() => undefined);
  return { events, stop: () => controller.abort() };
}

describe("inferencer: health and the first model", () => {
  it("is NOT_SERVING until a version is published, then loads it and answers DetectKeypoints", async () => {
    const harness = await startHarness(natsUrl, "first-model");
    try {
      const health = createClient(Health, `127.0.0.1:${harness.inferencer.address.port}`);
      expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect((await harness.client.getServingModel({})).state).toBe(ServingState.WAITING);
      const detectEarly = await harness.client.detectKeypoints({ frame: jpegFrame(1, jpegs[0] as Uint8Array) }).catch((e: unknown) => e);
      expect(AppError.is(detectEarly, Code.UNAVAILABLE), String(detectEarly)).toBe(true);

      const published = await publishTestModel(harness.registry, "first-model", v1);
      const version = published.manifest.model?.version;
      await waitFor(async () => (await health.check({})).status === HealthCheckResponse_ServingStatus.SERVING, { timeoutMs: 20_000, what: "SERVING" });
      const serving = await harness.client.getServingModel({});
      expect(serving.state).toBe(ServingState.SERVING);
      expect(serving.manifest?.model?.version).toBe(version);

      const { result } = await harness.client.detectKeypoints({ frame: jpegFrame(7, jpegs[0] as Uint8Array) });
      expect(result?.status?.code ?? 0).toBe(0);
      expect(result?.frameId).toBe(7n);
      expect(result?.model?.version).toBe(version);
      expect(result?.imageWidth).toBe(192);
      expect(result?.persons).toHaveLength(1);
      expect(result?.persons[0]?.keypoints).toHaveLength(17);
      for (const k of result?.persons[0]?.keypoints ?? []) {
        expect(Number.isFinite(k.x) && Number.isFinite(k.y) && Number.isFinite(k.score)).toBe(true);
      }
      health.$close();
    } finally {
      await harness.close();
    }
  });
});

describe("inferencer: streaming", () => {
  let harness: InferencerHarness;
  let firstVersion: string;
  beforeAll(async () => {
    harness = await startHarness(natsUrl, "streaming", { POSELOOP_MAX_STREAMS: "3" });
    firstVersion = (await publishTestModel(harness.registry, "streaming", v1)).manifest.model?.version ?? "";
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => harness.close());

  it("EVERY_FRAME: 300 frames at 30 fps with a publication mid-stream are all answered, in order, switching version once", async () => {
    let publication: Promise<string> | undefined;
    const responses: StreamKeypointsResponse[] = [];
    const frames = paced(300, 30, (i) => {
      if (i === 90) publication = publishTestModel(harness.registry, "streaming", v2).then((r) => r.manifest.model?.version ?? "");
    });
    for await (const response of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, streamName: "cam-1" }, frames))) responses.push(response);
    const secondVersion = await (publication as Promise<string>);

    expect(responses[0]?.payload.case).toBe("accepted");
    const answered = results(responses);
    expect(answered.map((r) => Number(r.frameId))).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(answered.every((r) => (r.status?.code ?? 0) === 0)).toBe(true);
    expect(responses.some((r) => r.payload.case === "dropped")).toBe(false);
    const versions = answered.map((r) => r.model?.version);
    const switchAt = versions.indexOf(secondVersion);
    expect(versions[0]).toBe(firstVersion);
    expect(switchAt).toBeGreaterThanOrEqual(90);
    // One switch, never back.
    expect(versions.slice(0, switchAt).every((v) => v === firstVersion)).toBe(true);
    expect(versions.slice(switchAt).every((v) => v === secondVersion)).toBe(true);
    for (const r of answered) {
      expect(r.persons).toHaveLength(1);
      expect(r.timings?.totalUs).toBeGreaterThan(0);
    }
  });

  it("LATEST_FRAME_WINS: a producer faster than the model gets drops reported, bounded latency and bounded memory", async () => {
    const big = await syntheticJpegs(4, 1280, 720, 11);
    const sentAt = new Map<bigint, number>();
    const count = 600;
    async function* flood(): AsyncGenerator<Frame> {
      for (let i = 0; i < count; i++) {
        const frame = jpegFrame(i, big[i % big.length] as Uint8Array);
        sentAt.set(frame.frameId, performance.now());
        yield frame;
        if (i % 50 === 0) await sleep(0);
      }
    }
    const rssBefore = process.memoryUsage().rss;
    const latencies: number[] = [];
    const dropped: bigint[] = [];
    const answered: bigint[] = [];
    for await (const response of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.LATEST_FRAME_WINS, maxInFlight: 2 }, flood()))) {
      if (response.payload.case === "result") {
        answered.push(response.payload.value.frameId);
        latencies.push(performance.now() - (sentAt.get(response.payload.value.frameId) ?? 0));
      } else if (response.payload.case === "dropped") dropped.push(...response.payload.value.frameIds);
    }
    const rssAfter = process.memoryUsage().rss;
    expect(dropped.length).toBeGreaterThan(0);
    // Every frame is accounted for exactly once: answered or reported dropped.
    expect(new Set([...answered, ...dropped]).size).toBe(count);
    expect(answered.length + dropped.length).toBe(count);
    // Answers come in send order, and the last frame is always answered (nothing newer replaced it).
    expect([...answered].sort((a, b) => Number(a - b))).toEqual(answered);
    expect(answered.at(-1)).toBe(BigInt(count - 1));
    latencies.sort((a, b) => a - b);
    // Bounded by the queue depth (2) times the per-frame time, not by the 600 frames sent.
    expect(latencies[Math.floor(latencies.length * 0.99)]).toBeLessThan(2000);
    expect(rssAfter - rssBefore).toBeLessThan(300 * 1024 * 1024);
  });

  it("a corrupt frame fails alone with INVALID_ARGUMENT; the frames after it are answered", async () => {
    const frames = [0, 1, 2, 3, 4].map((i) => jpegFrame(i, i === 2 ? Uint8Array.from([0xff, 0xd8, 0xff, 0x00, 1, 2, 3]) : (jpegs[i] as Uint8Array)));
    const responses: StreamKeypointsResponse[] = [];
    for await (const response of harness.client.streamKeypoints(streamRequests({}, frames))) responses.push(response);
    const answered = results(responses);
    expect(answered.map((r) => Number(r.frameId))).toEqual([0, 1, 2, 3, 4]);
    expect(answered[2]?.status?.code).toBe(Code.INVALID_ARGUMENT);
    expect(answered[2]?.status?.message).toMatch(/image|decode|corrupt/i);
    expect(answered[2]?.persons).toHaveLength(0);
    for (const i of [0, 1, 3, 4]) {
      expect(answered[i]?.status?.code ?? 0).toBe(0);
      expect(answered[i]?.persons).toHaveLength(1);
    }
  });

  it("a frame before StreamOptions ends the call with INVALID_ARGUMENT", async () => {
    async function* framesOnly() {
      yield { payload: { case: "frame" as const, value: jpegFrame(0, jpegs[0] as Uint8Array) } };
    }
    const error = await (async () => {
      for await (const _ of harness.client.streamKeypoints(framesOnly())) void _;
    })().catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as Error).message).toMatch(/StreamOptions/);
  });

  it("person boxes from the request are estimated one by one, in frame coordinates", async () => {
    const boxes = [
      { x: 10, y: 10, width: 60, height: 100 },
      { x: 100, y: 20, width: 70, height: 110 },
    ];
    const frame = jpegFrame(1, jpegs[1] as Uint8Array);
    frame.personBoxes = boxes.map((b) => ({ ...b, score: 1, $typeName: "poseloop.common.v1.BoundingBox" as const }));
    const { result } = await harness.client.detectKeypoints({ frame });
    expect(result?.persons).toHaveLength(2);
    const matched = new Set<number>();
    result?.persons.forEach((person) => {
      // People come back by score; each carries the box it was estimated in.
      const i = boxes.findIndex((b) => b.x === person.bbox?.x && b.y === person.bbox.y && b.width === person.bbox.width && b.height === person.bbox.height);
      expect(i).toBeGreaterThanOrEqual(0);
      matched.add(i);
      const box = boxes[i] as (typeof boxes)[number];
      // Top-down crops widen the box to the model's aspect ratio (×1.25 padding), so keypoints land near it.
      for (const k of person.keypoints) {
        expect(k.x).toBeGreaterThan(box.x - box.width);
        expect(k.x).toBeLessThan(box.x + 2 * box.width);
        expect(k.y).toBeGreaterThan(box.y - box.height);
        expect(k.y).toBeLessThan(box.y + 2 * box.height);
      }
    });
    expect(matched.size).toBe(2);
  });

  it("refuses streams beyond POSELOOP_MAX_STREAMS with RESOURCE_EXHAUSTED, and a cancelled stream frees its slot", async () => {
    const controllers = [new AbortController(), new AbortController(), new AbortController()];
    const open = controllers.map((controller) => harness.client.streamKeypoints(streamRequests({}, paced(1000, 30)), { signal: controller.signal })[Symbol.asyncIterator]());
    // Each stream is accepted before the next check.
    for (const stream of open) expect((await stream.next()).value?.payload.case).toBe("accepted");
    const refused = await (async () => {
      for await (const _ of harness.client.streamKeypoints(streamRequests({}, paced(2, 30)))) void _;
    })().catch((e: unknown) => e);
    expect(AppError.is(refused, Code.RESOURCE_EXHAUSTED)).toBe(true);
    controllers[0]?.abort();
    await open[0]?.next().catch(() => undefined);
    const answered = await waitFor(
      async () => {
        try {
          const got: StreamKeypointsResponse[] = [];
          for await (const r of harness.client.streamKeypoints(streamRequests({}, paced(2, 30)))) got.push(r);
          return results(got);
        } catch (error) {
          if (AppError.is(error, Code.RESOURCE_EXHAUSTED)) return undefined;
          throw error;
        }
      },
      { timeoutMs: 10_000, what: "a free stream slot after the cancel" },
    );
    expect(answered).toHaveLength(2);
    for (const controller of controllers) controller.abort();
    await Promise.all(open.map((stream) => stream.next().catch(() => undefined)));
  });
});

describe("inferencer: rejected models", () => {
  let harness: InferencerHarness;
  let goodVersion: string;
  beforeAll(async () => {
    harness = await startHarness(natsUrl, "rejects");
    goodVersion = (await publishTestModel(harness.registry, "rejects", v1)).manifest.model?.version ?? "";
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => harness.close());

  async function expectRejected(publish: () => Promise<string>, message: RegExp): Promise<void> {
    const watch = watchEvents(harness);
    try {
      await waitFor(() => watch.events.some((e) => e.kind === ServingEventKind.SNAPSHOT), { what: "the snapshot" });
      // A stream keeps running on the good version throughout.
      const streamed: StreamKeypointsResponse[] = [];
      const streaming = (async () => {
        for await (const r of harness.client.streamKeypoints(streamRequests({}, paced(45, 30)))) streamed.push(r);
      })();
      const badVersion = await publish();
      const failed = await waitFor(() => watch.events.find((e) => e.kind === ServingEventKind.LOAD_FAILED && e.candidate?.version === badVersion), { timeoutMs: 20_000, what: "LOAD_FAILED" });
      expect(failed.error?.message).toMatch(message);
      expect(failed.serving?.model?.version).toBe(goodVersion);
      await streaming;
      const answered = results(streamed);
      expect(answered).toHaveLength(45);
      expect(answered.every((r) => r.model?.version === goodVersion && (r.status?.code ?? 0) === 0)).toBe(true);
      const serving = await harness.client.getServingModel({});
      expect(serving.state).toBe(ServingState.SERVING);
      expect(serving.manifest?.model?.version).toBe(goodVersion);
    } finally {
      watch.stop();
    }
  }

  it("an artifact whose bytes no longer match its digest is rejected (DATA_LOSS) and the old model serves on", async () => {
    await expectRejected(async () => {
      const published = await publishTestModel(harness.registry, "rejects", v2, { promote: false });
      const artifact = published.manifest.artifacts.find((a) => a.digest === published.manifest.model?.digest);
      const blobs = await harness.publisherBus.blobStore(RegistryBuckets.artifacts);
      // Bit rot in the store: same name, other bytes.
      const tampered = Uint8Array.from(v2.serving);
      const middle = tampered.length >> 1;
      tampered[middle] = (tampered[middle] as number) ^ 0xff;
      await blobs.put(artifact?.objectName ?? "", tampered);
      const entry = await harness.registry.getServing("rejects");
      await harness.registry.setServing("rejects", { name: "rejects", version: published.manifest.model?.version ?? "" }, { expectedRevision: entry?.revision ?? 0, setBy: "test" });
      return published.manifest.model?.version ?? "";
    }, /digest/i);
  });

  it("a model whose input does not match its manifest is rejected", async () => {
    await expectRejected(async () => {
      const published = await publishTestModel(harness.registry, "rejects", v2, {
        editManifest: (m) => {
          if (m.input !== undefined) [m.input.width, m.input.height] = [96, 128];
          if (m.codec?.kind.case === "heatmap") [m.codec.kind.value.width, m.codec.kind.value.height] = [24, 32];
        },
      });
      return published.manifest.model?.version ?? "";
    }, /shape|input|dimension/i);
  });

  it("bytes that are not ONNX are rejected", async () => {
    await expectRejected(async () => {
      const published = await publishTestModel(harness.registry, "rejects", v2, { servingBytes: new TextEncoder().encode("<html>502 Bad Gateway</html>") });
      return published.manifest.model?.version ?? "";
    }, /onnx|model|load|protobuf/i);
  });

  it("a good version after the rejections is picked up", async () => {
    const published = await publishTestModel(harness.registry, "rejects", v2);
    await waitFor(async () => (await harness.client.getServingModel({})).manifest?.model?.version === published.manifest.model?.version, { timeoutMs: 20_000, what: "the good version" });
  });
});

describe("inferencer: load checks at the largest batch", () => {
  let harness: InferencerHarness;
  let goodVersion: string;
  beforeAll(async () => {
    // Batches of up to 4 people: a version must prove it runs 4 crops at once before it serves.
    harness = await startHarness(natsUrl, "batch-checks", { POSELOOP_MAX_BATCH: "4" });
    goodVersion = (await publishTestModel(harness.registry, "batch-checks", v1)).manifest.model?.version ?? "";
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => harness.close());

  it.each([
    ["batch-fixed-at-1", /batch 4/],
    ["reshape-to-batch-1", /batch 4/],
    ["nan-weights", /NaN|not finite/],
  ] as const)("a model that passes a one-crop warm-up but fails batched frames (%s) is rejected and the old one serves on", async (kind, message) => {
    const broken = await buildBrokenTestModel(kind, { seed: 3 });
    const watch = watchEvents(harness);
    try {
      await waitFor(() => watch.events.some((e) => e.kind === ServingEventKind.SNAPSHOT), { what: "the snapshot" });
      const badVersion = (await publishTestModel(harness.registry, "batch-checks", broken)).manifest.model?.version ?? "";
      const failed = await waitFor(() => watch.events.find((e) => e.kind === ServingEventKind.LOAD_FAILED && e.candidate?.version === badVersion), { timeoutMs: 20_000, what: "LOAD_FAILED" });
      expect(failed.error?.code).toBe(Code.FAILED_PRECONDITION);
      expect(failed.error?.message).toMatch(message);
      expect(failed.error?.message).not.toMatch(/onnxruntime_src|\.cc:|\.h:\d/);
      expect(failed.serving?.model?.version).toBe(goodVersion);

      // Frames that arrive together share a batch, and still get keypoints from the old version.
      const responses: StreamKeypointsResponse[] = [];
      const frames = Array.from({ length: 12 }, (_, i) => jpegFrame(i, jpegs[i % jpegs.length] as Uint8Array));
      for await (const r of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, maxInFlight: 8 }, frames))) responses.push(r);
      const answered = results(responses);
      expect(answered).toHaveLength(12);
      expect(answered.every((r) => r.model?.version === goodVersion && (r.status?.code ?? 0) === 0)).toBe(true);
      const health = createClient(Health, `127.0.0.1:${harness.inferencer.address.port}`);
      expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      health.$close();
    } finally {
      watch.stop();
    }
  });

  it("a healthy version is still accepted by the batched warm-up", async () => {
    const published = await publishTestModel(harness.registry, "batch-checks", v2);
    await waitFor(async () => (await harness.client.getServingModel({})).manifest?.model?.version === published.manifest.model?.version, { timeoutMs: 20_000, what: "the good version" });
  });
});

describe("inferencer: fairness between streams", () => {
  it("a frame of a light stream does not wait behind the queue of a stream of large PNGs", async () => {
    // One worker and batches of 2: without turns between streams, the light frame queued behind every large
    // frame read so far (16 of them answered before it, measured here).
    const harness = await startHarness(natsUrl, "fairness", { POSELOOP_MAX_BATCH: "2", POSELOOP_INFERENCE_WORKERS: "1" });
    try {
      const png = await plainPng(3840, 2160);
      await publishTestModel(harness.registry, "fairness", v1);
      await harness.inferencer.models.waitForServing(20_000);

      let heavyAnswered = 0;
      const heavy = (async () => {
        const frames = Array.from({ length: 24 }, (_, i) => pngFrame(i, png));
        for await (const r of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, maxInFlight: 16, streamName: "4k" }, frames))) {
          if (r.payload.case === "result") heavyAnswered++;
        }
      })();
      // Two answers in, the stream's other frames wait in the inferencer.
      await waitFor(() => heavyAnswered >= 2, { timeoutMs: 60_000, what: "the first large frames" });
      let before = 0;
      let during = -1;
      async function* light(): AsyncGenerator<Frame> {
        before = heavyAnswered;
        yield jpegFrame(0, jpegs[0] as Uint8Array);
      }
      for await (const r of harness.client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, streamName: "light" }, light()))) {
        if (r.payload.case !== "result") continue;
        during = heavyAnswered - before;
        expect(r.payload.value.status?.code ?? 0).toBe(0);
      }
      await heavy;
      expect(heavyAnswered).toBe(24);
      // At most the large frame being decoded when the light one arrived, and one more for timing slack.
      expect(during).toBeGreaterThanOrEqual(0);
      expect(during).toBeLessThanOrEqual(2);
    } finally {
      await harness.close();
    }
  });
});

describe("inferencer: NATS restart", () => {
  it("keeps a stream going while nats-server is killed (SIGKILL) and comes back, and picks up a publication made after", async () => {
    const server = await NatsServer.start();
    const harness = await startHarness(server.url, "restart");
    try {
      const first = (await publishTestModel(harness.registry, "restart", v1)).manifest.model?.version;
      await harness.inferencer.models.waitForServing(20_000);
      const responses: StreamKeypointsResponse[] = [];
      // The stream runs until 30 frames after the version published after the crash serves: a broker
      // recovering its store after SIGKILL takes seconds of its own, which are no part of what is tested.
      let stopAt = 1_200;
      let sent = 0;
      const frames = (async function* () {
        for await (const frame of paced(1_200, 30, (i) => {
          // A crashed broker (no shutdown, no goodbye to its clients), down for a second.
          if (i === 30) void server.kill().then(() => sleep(1000)).then(() => server.restart());
        })) {
          if (sent >= stopAt) return;
          sent++;
          yield frame;
        }
      })();
      const streaming = (async () => {
        for await (const r of harness.client.streamKeypoints(streamRequests({}, frames))) responses.push(r);
      })();
      await sleep(2000);
      const second = await waitFor(
        async () => {
          try {
            return (await publishTestModel(harness.registry, "restart", v2)).manifest.model?.version;
          } catch (error) {
            if (AppError.is(error, Code.UNAVAILABLE, Code.INTERNAL, Code.DEADLINE_EXCEEDED)) return undefined;
            throw error;
          }
        },
        { timeoutMs: 30_000, intervalMs: 250, what: "a publication after the restart" },
      );
      await waitFor(async () => (harness.inferencer.models.current?.version === second ? true : undefined), { timeoutMs: 30_000, intervalMs: 100, what: "the new version serving" });
      stopAt = sent + 30;
      await streaming;
      const answered = results(responses);
      expect(answered.length).toBeGreaterThan(60);
      expect(answered.map((r) => Number(r.frameId))).toEqual(Array.from({ length: answered.length }, (_, i) => i));
      expect(answered.every((r) => (r.status?.code ?? 0) === 0)).toBe(true);
      expect(answered[0]?.model?.version).toBe(first);
      expect(answered.at(-1)?.model?.version).toBe(second);
    } finally {
      await harness.close();
      await server.dispose();
    }
  });
});
