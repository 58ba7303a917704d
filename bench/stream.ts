/**
 * The inferencer under load, against a raw onnxruntime loop over the same person crops with the same int8
 * model, in one run: frames/s and latency for 1 stream and for 8 concurrent streams; p99 while new versions
 * are hot-swapped in under load against the steady p99; RSS before and after 100 swaps in a row.
 */
import * as ort from "onnxruntime-node";
import { ModelRegistry } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { renderSyntheticScene, SeededRandom } from "@poseloop/data";
import { cropPerson, decodeImage, encodeJpeg, IMAGENET_NORMALIZATION } from "@poseloop/vision";
import { DeliveryMode, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { makeTempDir } from "@poseloop/testkit";
import { createClient } from "@poseloop/grpc";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { loadConfig, startInferencer } from "@poseloop/inferencer";
import { buildTestModel, jpegFrame, publishTestModel, streamRequests, type InferenceClient, type TestModel } from "@poseloop/inferencer/testing";
import { openBus } from "@poseloop/bus";
import { fmt, printTable } from "./harness.js";

const WIDTH = 256;
const HEIGHT = 192;
const FRAMES_PER_STREAM = 240;

export interface Sample {
  readonly jpeg: Uint8Array;
  readonly box: { x: number; y: number; width: number; height: number };
}

export async function samples(count: number): Promise<Sample[]> {
  const random = new SeededRandom(3);
  const out: Sample[] = [];
  for (let i = 0; i < count; i++) {
    const scene = renderSyntheticScene(random, { width: WIDTH, height: HEIGHT, minPeople: 1, maxPeople: 1 });
    const [x, y, width, height] = scene.people[0]?.bbox ?? [0, 0, WIDTH, HEIGHT];
    out.push({ jpeg: await encodeJpeg(scene.image, 85), box: { x, y, width, height } });
  }
  return out;
}

export function percentileOf(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

/** The peer: decode + crop + session.run per frame (batch 1) or per 8 frames (batch 8), one thread. */
async function raw(model: TestModel, data: Sample[], frames: number, batch: number): Promise<{ fps: number; latencies: number[] }> {
  const session = await ort.InferenceSession.create(model.serving, { graphOptimizationLevel: "all", intraOpNumThreads: 1 });
  const { inputWidth: w, inputHeight: h } = model.config;
  const plane = 3 * w * h;
  const latencies: number[] = [];
  const run = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i += batch) {
      const start = performance.now();
      const n = Math.min(batch, count - i);
      const tensor = new Float32Array(n * plane);
      for (let j = 0; j < n; j++) {
        const sample = data[(i + j) % data.length] as Sample;
        const image = await decodeImage(sample.jpeg);
        cropPerson(image, sample.box, { inputWidth: w, inputHeight: h, normalization: IMAGENET_NORMALIZATION, udp: false }, tensor, j * plane);
      }
      await session.run({ input: new ort.Tensor("float32", tensor, [n, 3, h, w]) });
      latencies.push(performance.now() - start);
    }
  };
  await run(32);
  latencies.length = 0;
  const start = performance.now();
  await run(frames);
  const fps = frames / ((performance.now() - start) / 1000);
  await session.release();
  return { fps, latencies };
}

/**
 * `streams` concurrent EVERY_FRAME streams. Saturated: each sends as fast as flow control lets it (throughput).
 * Lock-step: each sends its next frame when the previous answer is back, one frame in flight per stream, as a
 * camera whose frames come slower than the model (latency without queueing).
 */
export async function served(
  client: InferenceClient,
  data: Sample[],
  streams: number,
  frames: number,
  options: { lockstep?: boolean; during?: () => Promise<void> } = {},
): Promise<{ fps: number; latencies: number[]; stages: Record<string, number[]> }> {
  const latencies: number[] = [];
  // Per frame, in ms: the server's own timings and the rest of the round trip (gRPC, protobuf, the client).
  const stages: Record<string, number[]> = { queue: [], decode: [], preprocess: [], inference: [], postprocess: [], server: [], outside: [] };
  const start = performance.now();
  const one = async (s: number): Promise<void> => {
    const sent = new Map<bigint, number>();
    let answered: (() => void) | undefined;
    async function* source(): AsyncGenerator<Frame> {
      for (let i = 0; i < frames; i++) {
        if (options.lockstep === true && i > 0) await new Promise<void>((resolve) => (answered = resolve));
        const sample = data[(i + s * 7) % data.length] as Sample;
        const frame = jpegFrame(i, sample.jpeg);
        frame.personBoxes = [{ $typeName: "poseloop.common.v1.BoundingBox", ...sample.box, score: 1 }];
        sent.set(frame.frameId, performance.now());
        yield frame;
      }
    }
    for await (const response of client.streamKeypoints(streamRequests({ delivery: DeliveryMode.EVERY_FRAME, maxInFlight: 4 }, source()))) {
      if (response.payload.case !== "result") continue;
      const latency = performance.now() - (sent.get(response.payload.value.frameId) ?? 0);
      latencies.push(latency);
      const t = response.payload.value.timings;
      if (t !== undefined) {
        const ms = { queue: t.queueUs, decode: t.decodeUs, preprocess: t.preprocessUs, inference: t.inferenceUs, postprocess: t.postprocessUs, server: t.totalUs };
        for (const [stage, us] of Object.entries(ms)) stages[stage]?.push(us / 1000);
        stages["outside"]?.push(latency - t.totalUs / 1000);
      }
      answered?.();
      answered = undefined;
    }
  };
  await Promise.all([...Array.from({ length: streams }, (_, s) => one(s)), options.during?.() ?? Promise.resolve()]);
  return { fps: (streams * frames) / ((performance.now() - start) / 1000), latencies, stages };
}

export async function run(): Promise<void> {
  const dir = await makeTempDir("poseloop-bench-stream-");
  const config = { architecture: "lite" as const, inputWidth: 48, inputHeight: 64, numKeypoints: 17, lite: { channels: [16, 32, 64] as const } };
  const [v1, v2, data] = await Promise.all([buildTestModel({ seed: 1, config }), buildTestModel({ seed: 2, config }), samples(48)]);
  const busDir = `${dir.path}/bus`;
  const bus = await openBus({ natsServers: [], embeddedDir: busDir });
  const inferencer = await startInferencer(
    loadConfig({ POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_BUS_DIR: busDir, POSELOOP_MODEL: "bench", POSELOOP_INFERENCE_WORKERS: "2", POSELOOP_INTRA_OP_THREADS: "1", POSELOOP_MAX_BATCH: "8", POSELOOP_FRAME_TRACE_RATIO: "1" }),
    silentLogger,
  );
  const client: InferenceClient = createClient(InferenceService, `127.0.0.1:${inferencer.address.port}`);
  const harness = { client, inferencer };
  try {
    const registry = await ModelRegistry.open(bus, silentLogger);
    await publishTestModel(registry, "bench", v1);
    await harness.inferencer.models.waitForServing(30_000);
    const rows: string[][] = [];
    let breakdown: Record<string, number[]> = {};
    for (const streams of [1, 8]) {
      const frames = streams === 1 ? FRAMES_PER_STREAM * 2 : FRAMES_PER_STREAM;
      await served(harness.client, data, streams, 16);
      const ours = await served(harness.client, data, streams, frames);
      const paced = await served(harness.client, data, streams, Math.min(frames, 120), { lockstep: true });
      if (streams === 1) breakdown = paced.stages;
      // The peer batches like the server can: one frame at a time for one stream, eight for eight.
      const peer = await raw(v1, data, streams * frames, streams === 1 ? 1 : 8);
      rows.push([
        String(streams),
        fmt(ours.fps, 0),
        fmt(peer.fps, 0),
        fmt(ours.fps / peer.fps, 2),
        fmt(percentileOf(paced.latencies, 50), 2),
        fmt(percentileOf(paced.latencies, 99), 2),
        fmt(percentileOf(peer.latencies, 50), 2),
        fmt(percentileOf(paced.latencies, 50) - percentileOf(peer.latencies, 50), 2),
      ]);
    }
    printTable(
      "inferencer streams vs a raw onnxruntime loop (same int8 lite 48x64 model, same decode and crops; JPEG 256x192 frames, 1 person box)",
      ["streams", "served fps", "raw fps", "fps ratio", "p50 ms (1 in flight/stream)", "p99 ms", "raw p50 ms/run", "added p50 ms"],
      rows,
    );
    printTable(
      "where a lock-step frame's time goes (1 stream, medians in ms; 'outside' = client latency - server total: gRPC, protobuf, the client)",
      Object.keys(breakdown),
      [Object.values(breakdown).map((values) => fmt(percentileOf(values, 50), 2))],
    );

    // p99 under load with versions swapped in mid-run, against the same load without swaps.
    const steady = await served(harness.client, data, 8, FRAMES_PER_STREAM, { lockstep: true });
    let swaps = 0;
    const swapping = await served(harness.client, data, 8, FRAMES_PER_STREAM, {
      lockstep: true,
      during: async () => {
        for (let i = 0; i < 4; i++) {
          await publishTestModel(registry, "bench", i % 2 === 0 ? v2 : v1);
          swaps++;
          await new Promise((resolve) => setTimeout(resolve, 400));
        }
      },
    });
    printTable("hot swap under load (8 lock-step streams)", ["case", "swaps", "fps", "p50 ms", "p99 ms", "p99 ratio"], [
      ["steady", "0", fmt(steady.fps, 0), fmt(percentileOf(steady.latencies, 50), 2), fmt(percentileOf(steady.latencies, 99), 2), "1.00"],
      ["swapping", String(swaps), fmt(swapping.fps, 0), fmt(percentileOf(swapping.latencies, 50), 2), fmt(percentileOf(swapping.latencies, 99), 2), fmt(percentileOf(swapping.latencies, 99) / percentileOf(steady.latencies, 99), 2)],
    ]);

    // 100 swaps in a row: memory must come back (old sessions released once drained).
    global.gc?.();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 100; i++) {
      const version = (await publishTestModel(registry, "bench", i % 2 === 0 ? v2 : v1)).manifest.model?.version;
      while (harness.inferencer.models.current?.version !== version) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    global.gc?.();
    const after = process.memoryUsage().rss;
    printTable("100 swaps in a row", ["RSS before MiB", "RSS after MiB", "growth MiB"], [[fmt(before / 2 ** 20, 1), fmt(after / 2 ** 20, 1), fmt((after - before) / 2 ** 20, 1)]]);
  } finally {
    client.$close();
    await inferencer.stop();
    await bus.close();
    await dir.remove();
  }
}
