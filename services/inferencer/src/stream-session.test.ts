import type { MessageInitShape } from "@bufbuild/protobuf";
import { AppError, Code, deferred, silentLogger, sleep } from "@poseloop/core";
import type { PersonEstimate } from "@poseloop/estimator";
import { BLAZEPOSE33, COCO17 } from "@poseloop/pose";
import { createClient, GrpcServer, type ClientControls, type ServiceClient } from "@poseloop/grpc";
import {
  DeliveryMode,
  ImageFormat,
  InferenceService,
  StreamOptionsSchema,
  TrackingMetric,
  type Frame,
  type StreamKeypointsRequest,
  StreamKeypointsRequestSchema,
  type StreamKeypointsResponse,
  type StreamKeypointsResponseSchema,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { create } from "@bufbuild/protobuf";
import { installTestMetrics } from "@poseloop/telemetry";
import { waitFor } from "@poseloop/testkit";
import { afterEach, describe, expect, it } from "vitest";
import type { InferenceLimits } from "./config.js";
import type { FrameCall, ProcessedFrame } from "./frame-processor.js";
import { inferenceService, peerHost } from "./inference-service.js";
import type { ModelManager } from "./model-manager.js";
import { DEFAULT_SCENE_CUT_THRESHOLD, detectsSceneCuts, resolveStreamOptions, runStream } from "./stream-session.js";

type RequestInit = MessageInitShape<typeof StreamKeypointsRequestSchema>;
type Client = ServiceClient<(typeof InferenceService)["method"]> & ClientControls;

function testLimits(overrides: Partial<InferenceLimits> = {}): InferenceLimits {
  return {
    maxFrameBytes: 1 << 20,
    maxFramePixels: 1 << 22,
    maxBoxesPerFrame: 64,
    maxStreams: 64,
    maxStreamsPerPeer: 64,
    defaultMaxInFlight: 4,
    maxInFlight: 32,
    maxModelBytes: 1 << 20,
    streamFirstMessageTimeoutMs: 10_000,
    streamIdleTimeoutMs: 60_000,
    ...overrides,
  };
}

/** How a frame goes wrong, chosen by the test through its frame id. */
type Fault = "processor rejects" | "non-finite keypoints" | "ragged keypoints" | "span end throws" | "no persons";

/** A FrameProcessor that answers one person per frame without a model, and counts the frames it was given. */
class FakeProcessor {
  calls = 0;
  readonly faults = new Map<bigint, Fault>();
  /** Holds every frame until released (a busy model). */
  gate: Promise<void> = Promise.resolve();

  async process(frame: Frame, _settings: unknown, _call: FrameCall): Promise<ProcessedFrame> {
    this.calls++;
    await this.gate;
    const fault = this.faults.get(frame.frameId);
    if (fault === "processor rejects") throw new Error("/build/onnxruntime/core/session/inference_session.cc:42 onnxruntime::InferenceSession::Run failed");
    const keypoints = Float32Array.from({ length: 17 * 3 }, (_, i) => (i % 3 === 2 ? 0.9 : 10 + i));
    if (fault === "non-finite keypoints") keypoints[0] = Number.NaN;
    const person: PersonEstimate = { bbox: { x: 0, y: 0, width: 64, height: 128 }, score: 0.9, keypoints: fault === "ragged keypoints" ? keypoints.subarray(0, 5) : keypoints };
    const span = fault === "span end throws" ? ({ end: () => { throw new TypeError("Cannot read properties of undefined (reading 'spanContext')"); } } as unknown as ProcessedFrame["span"]) : undefined;
    return { frame, ok: true, estimates: fault === "no persons" ? [] : [person], span, received: 0n, result: { frameId: frame.frameId, ptsUs: frame.ptsUs, status: { code: Code.OK, message: "" } } };
  }
}

const fakeModels = { current: undefined, state: 0, previous: [], events: () => (async function* () {})() } as unknown as ModelManager;

function frame(id: number, bytes = 16): RequestInit {
  const data = new Uint8Array(bytes);
  data.set([0xff, 0xd8, 0xff]);
  return { payload: { case: "frame", value: { frameId: BigInt(id), ptsUs: BigInt(id * 33_333), image: { case: "encoded", value: { data, format: ImageFormat.JPEG } } } } };
}

function options(init: MessageInitShape<typeof StreamOptionsSchema> = {}): RequestInit {
  return { payload: { case: "options", value: { delivery: DeliveryMode.EVERY_FRAME, ...init } } };
}

async function* requests(...items: RequestInit[]): AsyncGenerator<RequestInit> {
  for (const item of items) yield item;
}

async function* messages(...items: RequestInit[]): AsyncGenerator<StreamKeypointsRequest> {
  for (const item of items) yield message(item);
}

/** Frames without end, as fast as they are taken; `sent` counts them. */
function endless(first: RequestInit, bytes: number): { source: AsyncGenerator<RequestInit>; sent: () => number } {
  let sent = 0;
  return {
    source: (async function* () {
      yield first;
      for (;;) yield frame(sent++, bytes);
    })(),
    sent: () => sent,
  };
}

/** Never sends anything, until the call ends. */
async function* silent(after: RequestInit[] = []): AsyncGenerator<RequestInit> {
  for (const item of after) yield item;
  await new Promise(() => undefined);
}

async function collect(stream: AsyncIterable<StreamKeypointsResponse>): Promise<{ responses: StreamKeypointsResponse[]; error: unknown }> {
  const responses: StreamKeypointsResponse[] = [];
  try {
    for await (const response of stream) responses.push(response);
    return { responses, error: undefined };
  } catch (error) {
    return { responses, error };
  }
}

function streamDeps(processor: FakeProcessor) {
  return { processor, models: fakeModels, limits: testLimits(), defaultModel: "demo", logger: silentLogger, streamId: "s" };
}

/** Runs a stream in process (no transport), collecting the ids of its results and how it ended. */
async function collectInit(stream: AsyncIterable<MessageInitShape<typeof StreamKeypointsResponseSchema>>): Promise<{ ids: number[]; error: unknown }> {
  const ids: number[] = [];
  try {
    for await (const response of stream) {
      if (response.payload?.case === "result") ids.push(Number(response.payload.value.frameId));
    }
    return { ids, error: undefined };
  } catch (error) {
    return { ids, error };
  }
}

function resultIds(responses: readonly StreamKeypointsResponse[]): number[] {
  return responses.flatMap((r) => (r.payload.case === "result" ? [Number(r.payload.value.frameId)] : []));
}

const servers: { server: GrpcServer; client: Client }[] = [];

async function serve(processor: FakeProcessor, limits: Partial<InferenceLimits> = {}): Promise<Client> {
  const server = new GrpcServer({ logger: silentLogger, tracing: false });
  server.register(InferenceService, inferenceService({ processor, models: fakeModels, limits: testLimits(limits), defaultModel: "demo", logger: silentLogger }));
  const { port } = await server.listen("127.0.0.1", 0);
  const client: Client = createClient(InferenceService, `127.0.0.1:${port}`);
  servers.push({ server, client });
  return client;
}

/** Another client (its own connection, so its own port) of the server `client` calls. */
function anotherClient(client: Client): Client {
  const server = servers.find((entry) => entry.client === client)?.server;
  const other: Client = createClient(InferenceService, `127.0.0.1:${server?.address?.port ?? 0}`);
  if (server !== undefined) servers.push({ server, client: other });
  return other;
}

afterEach(async () => {
  for (const { server, client } of servers.splice(0)) {
    client.$close();
    await server.drain(0);
  }
});

describe("stream options", () => {
  it("refuses non-finite or out-of-range smoothing and tracking values, naming every problem", () => {
    const bad = create(StreamOptionsSchema, {
      minKeypointScore: Number.NaN,
      smoothing: { enabled: true, minCutoff: Number.POSITIVE_INFINITY, beta: Number.NaN, derivativeCutoff: -1 },
      tracking: { enabled: true, metric: 7 as TrackingMetric, matchThreshold: 2, maxAgeFrames: 4_000_000_000, sceneCutThreshold: 1.5 },
    });
    let error: unknown;
    try {
      resolveStreamOptions(bad, { modelName: "demo", limits: testLimits() });
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT), String(error)).toBe(true);
    const problems = (error as AppError).problems.join("\n");
    for (const field of ["min_keypoint_score", "smoothing.min_cutoff", "smoothing.beta", "smoothing.derivative_cutoff", "tracking.metric", "tracking.match_threshold", "tracking.max_age_frames", "tracking.scene_cut_threshold"]) {
      expect(problems).toContain(field);
    }
  });

  it("tests for scene cuts by default wherever tracks are kept, and not at threshold 1", () => {
    const resolve = (init: MessageInitShape<typeof StreamOptionsSchema>) => resolveStreamOptions(create(StreamOptionsSchema, init), { modelName: "demo", limits: testLimits() });
    expect(detectsSceneCuts(resolve({}))).toBe(false);
    expect(resolve({ tracking: { enabled: true } }).tracking.sceneCutThreshold).toBe(DEFAULT_SCENE_CUT_THRESHOLD);
    expect(detectsSceneCuts(resolve({ tracking: { enabled: true } }))).toBe(true);
    expect(detectsSceneCuts(resolve({ smoothing: { enabled: true } }))).toBe(true);
    expect(detectsSceneCuts(resolve({ smoothing: { enabled: true }, tracking: { enabled: false, sceneCutThreshold: 1 } }))).toBe(false);
    expect(() => resolve({ smoothing: { enabled: true }, tracking: { sceneCutThreshold: -0.5 } })).toThrow(/tracking.scene_cut_threshold/);
  });

  it("a stream asking for smoothing with min_cutoff = +Infinity gets INVALID_ARGUMENT; the server serves on", async () => {
    const client = await serve(new FakeProcessor());
    const refused = await collect(client.streamKeypoints(requests(options({ smoothing: { enabled: true, minCutoff: Number.POSITIVE_INFINITY } }), frame(1), frame(2))));
    expect(AppError.is(refused.error, Code.INVALID_ARGUMENT), String(refused.error)).toBe(true);
    expect(String((refused.error as AppError).message)).toMatch(/min_cutoff/);
    const next = await collect(client.streamKeypoints(requests(options({ smoothing: { enabled: true } }), frame(1), frame(2))));
    expect(next.error).toBeUndefined();
    expect(resultIds(next.responses)).toEqual([1, 2]);
  });
});

describe("a failure inside a stream's pipeline", () => {
  const faults: Fault[] = ["processor rejects", "non-finite keypoints", "ragged keypoints", "span end throws"];
  for (const [n, fault] of faults.entries()) {
    it(`(${fault}) ends that stream with INTERNAL and a log reference; other streams and the process go on`, async () => {
      const processor = new FakeProcessor();
      const faultyId = 1000 + n;
      processor.faults.set(BigInt(faultyId), fault);
      const controller = new AbortController();
      const tracked = options({ smoothing: { enabled: true }, tracking: { enabled: true, metric: TrackingMetric.OKS } });
      const healthy = Array.from({ length: 20 }, (_, i) => frame(i));
      const run = (...items: RequestInit[]) => collectInit(runStream(messages(...items), controller.signal, streamDeps(processor)));
      try {
        const [faulty, others] = await Promise.all([
          // More frames than max_in_flight after the fault: the old pipeline then waited forever for a slot.
          run(tracked, ...Array.from({ length: 12 }, (_, i) => frame(faultyId - 1 + i))),
          Promise.all([1, 2].map(() => run(tracked, ...healthy))),
        ]);
        expect(AppError.is(faulty.error, Code.INTERNAL), String(faulty.error)).toBe(true);
        expect((faulty.error as AppError).message).toMatch(/^internal error \(ref [0-9a-f]+\)$/);
        for (const other of others) {
          expect(other.error).toBeUndefined();
          expect(other.ids).toEqual(healthy.map((_, i) => i));
        }
        expect((await run(tracked, frame(1))).ids).toEqual([1]);
      } finally {
        controller.abort();
      }
    });
  }

  it("a frame without people on a smoothed stream is answered (no filter to size)", async () => {
    const processor = new FakeProcessor();
    processor.faults.set(1n, "no persons");
    const controller = new AbortController();
    const smoothed = options({ smoothing: { enabled: true } });
    const { ids, error } = await collectInit(runStream(messages(smoothed, frame(1), frame(2)), controller.signal, streamDeps(processor)));
    controller.abort();
    expect(error).toBeUndefined();
    expect(ids).toEqual([1, 2]);
  });
});

describe("back-pressure", () => {
  for (const delivery of [DeliveryMode.EVERY_FRAME, DeliveryMode.LATEST_FRAME_WINS]) {
    it(`${DeliveryMode[delivery]}: a client that sends but never reads stops being read`, async () => {
      const processor = new FakeProcessor();
      const client = await serve(processor);
      const { source } = endless(options({ delivery }), 16 * 1024);
      const controller = new AbortController();
      const responses = client.streamKeypoints(source, { signal: controller.signal })[Symbol.asyncIterator]();
      expect((await responses.next()).value?.payload.case).toBe("accepted");
      try {
        // Once the transport's buffers are full the server reads no more: the count stops growing.
        let last = -1;
        await waitFor(async () => {
          const now = processor.calls;
          const stalled = now === last;
          last = now;
          await sleep(300);
          return stalled && processor.calls === now;
        }, { timeoutMs: 8000, intervalMs: 1, what: "the server to stop reading" });
        expect(processor.calls).toBeLessThan(2000);
      } finally {
        controller.abort();
      }
    });
  }

  it("LATEST_FRAME_WINS: frames superseded while the client does not read come in one FramesDropped notice", async () => {
    const recorded = installTestMetrics();
    const processor = new FakeProcessor();
    const busy = deferred<void>();
    processor.gate = busy.promise;
    let pulled = 0;
    const source = (async function* () {
      yield message(options({ delivery: DeliveryMode.LATEST_FRAME_WINS, maxInFlight: 1 }));
      for (let i = 0; i < 100; i++) {
        pulled++;
        yield message(frame(i));
      }
    })();
    const controller = new AbortController();
    const stream = runStream(source, controller.signal, { processor, models: fakeModels, limits: testLimits(), defaultModel: "demo", logger: silentLogger, streamId: "s" });
    try {
      expect((await stream.next()).value?.payload?.case).toBe("accepted");
      await waitFor(() => pulled === 100, { timeoutMs: 5000, what: "every frame read" });
      busy.resolve();
      const rest: string[] = [];
      const dropped: bigint[] = [];
      const answered: bigint[] = [];
      for await (const response of stream) {
        rest.push(String(response.payload?.case));
        if (response.payload?.case === "dropped") dropped.push(...(response.payload.value.frameIds ?? []));
        if (response.payload?.case === "result") answered.push(response.payload.value.frameId ?? -1n);
      }
      expect(rest.filter((c) => c === "dropped")).toHaveLength(1);
      expect([...dropped, ...answered].map(Number).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      // Every dropped frame is counted as such, whatever the notices merged.
      expect(await recorded.points("poseloop.inferencer.frames")).toEqual([{ attributes: { "poseloop.model.name": "demo", outcome: "dropped" }, value: dropped.length }]);
    } finally {
      controller.abort();
      await recorded.shutdown();
    }
  });
});

function message(init: RequestInit): StreamKeypointsRequest {
  return create(StreamKeypointsRequestSchema, init);
}

describe("silent streams", () => {
  it("calls that never send StreamOptions end with DEADLINE_EXCEEDED and free their slots", async () => {
    const client = await serve(new FakeProcessor(), { maxStreams: 2, streamFirstMessageTimeoutMs: 200 });
    const started = Date.now();
    const silentCalls = await Promise.all([1, 2].map(() => collect(client.streamKeypoints(silent()))));
    for (const call of silentCalls) expect(AppError.is(call.error, Code.DEADLINE_EXCEEDED), String(call.error)).toBe(true);
    expect(Date.now() - started).toBeLessThan(5000);
    const next = await collect(client.streamKeypoints(requests(options(), frame(1))));
    expect(resultIds(next.responses)).toEqual([1]);
  });

  it("a stream that stops sending gets its frames answered, then DEADLINE_EXCEEDED after the idle timeout", async () => {
    const client = await serve(new FakeProcessor(), { maxStreams: 1, streamIdleTimeoutMs: 300 });
    const idle = await collect(client.streamKeypoints(silent([options(), frame(1), frame(2)])));
    expect(resultIds(idle.responses)).toEqual([1, 2]);
    expect(AppError.is(idle.error, Code.DEADLINE_EXCEEDED), String(idle.error)).toBe(true);
    const next = await collect(client.streamKeypoints(requests(options(), frame(3))));
    expect(resultIds(next.responses)).toEqual([3]);
  });
});

describe("protocol errors", () => {
  it("a message without a frame after the options: the frames read before it are answered, then INVALID_ARGUMENT", async () => {
    const processor = new FakeProcessor();
    const busy = deferred<void>();
    processor.gate = busy.promise;
    const client = await serve(processor);
    const call = collect(client.streamKeypoints(requests(options(), frame(1), frame(2), { payload: { case: undefined } })));
    await waitFor(() => processor.calls === 2, { timeoutMs: 5000, what: "both frames read" });
    await sleep(100);
    busy.resolve();
    const { responses, error } = await call;
    expect(resultIds(responses)).toEqual([1, 2]);
    expect(AppError.is(error, Code.INVALID_ARGUMENT), String(error)).toBe(true);
  });
});

describe("a client that neither reads nor sends", () => {
  it("has its call ended after the idle timeout though the server's writes wait on it, freeing its slot", async () => {
    const client = await serve(new FakeProcessor(), { maxStreams: 1, streamIdleTimeoutMs: 500 });
    // Frames without end: once the server stops reading (its answers are not read), the client cannot send either.
    const { source } = endless(options(), 16 * 1024);
    const controller = new AbortController();
    const stuck = client.streamKeypoints(source, { signal: controller.signal })[Symbol.asyncIterator]();
    try {
      expect((await stuck.next()).value?.payload.case).toBe("accepted");
      const other = anotherClient(client);
      await waitFor(async () => resultIds((await collect(other.streamKeypoints(requests(options(), frame(1))))).responses).join() === "1", {
        timeoutMs: 8000,
        intervalMs: 200,
        what: "a new stream admitted",
      });
    } finally {
      controller.abort();
    }
  });
});

describe("streams per client", () => {
  it("refuses a client's streams beyond POSELOOP_MAX_STREAMS_PER_PEER, over all its connections, and admits it again once one ends", async () => {
    const client = await serve(new FakeProcessor(), { maxStreams: 8, maxStreamsPerPeer: 2 });
    const controllers = [new AbortController(), new AbortController()];
    const open = controllers.map((controller) => client.streamKeypoints(silent([options()]), { signal: controller.signal })[Symbol.asyncIterator]());
    for (const stream of open) expect((await stream.next()).value?.payload.case).toBe("accepted");
    for (const caller of [client, anotherClient(client)]) {
      const refused = await collect(caller.streamKeypoints(requests(options(), frame(1))));
      expect(AppError.is(refused.error, Code.RESOURCE_EXHAUSTED), String(refused.error)).toBe(true);
      expect(AppError.from(refused.error).message).toContain("too many streams from this client");
    }
    controllers[0]?.abort();
    // The client cancels a stream it is reading.
    await open[0]?.next().catch(() => undefined);
    await waitFor(async () => resultIds((await collect(client.streamKeypoints(requests(options(), frame(2))))).responses).join() === "2", {
      timeoutMs: 5000,
      what: "a stream admitted after one ended",
    });
    controllers[1]?.abort();
    await open[1]?.next().catch(() => undefined);
  });

  it("counts streams by host, whatever the port", () => {
    expect(peerHost("10.0.0.7:51234")).toBe("10.0.0.7");
    expect(peerHost("::1:51234")).toBe("::1");
    expect(peerHost("[2001:db8::1]:443")).toBe("2001:db8::1");
    expect(peerHost("unknown")).toBe("unknown");
  });
});

/** How a scripted model answers a frame: its keypoint count, the sigmas it names, and its people's left edges. */
interface ScriptedAnswer {
  readonly keypoints: number;
  readonly sigmas?: readonly number[];
  readonly xs: readonly number[];
}

/** A processor that answers each frame as `script` says: people 60x160 px, keypoints spread over the box. */
function scriptedProcessor(script: (frameId: number) => ScriptedAnswer) {
  return {
    process: async (frame: Frame): Promise<ProcessedFrame> => {
      const { keypoints: k, sigmas, xs } = script(Number(frame.frameId));
      const estimates: PersonEstimate[] = xs.map((x) => ({
        bbox: { x, y: 40, width: 60, height: 160 },
        score: 0.9,
        keypoints: Float32Array.from({ length: 3 * k }, (_, i) => {
          const j = Math.floor(i / 3);
          return i % 3 === 0 ? x + (j % 3) * 20 : i % 3 === 1 ? 40 + (j * 160) / k : 0.9;
        }),
      }));
      return { frame, ok: true, estimates, span: undefined, received: 0n, ...(sigmas === undefined ? {} : { oksSigmas: sigmas }), result: { frameId: frame.frameId, ptsUs: frame.ptsUs, status: { code: Code.OK, message: "" } } };
    },
  };
}

/** The track ids of each result, in frame order, and how the stream ended. */
async function trackIds(script: (frameId: number) => ScriptedAnswer, frames: number, init: MessageInitShape<typeof StreamOptionsSchema>): Promise<{ ids: number[][]; error: unknown }> {
  const deps = { ...streamDeps(new FakeProcessor()), processor: scriptedProcessor(script) };
  const items = [options(init), ...Array.from({ length: frames }, (_, i) => frame(i + 1))];
  const ids: number[][] = [];
  try {
    for await (const response of runStream(messages(...items), new AbortController().signal, deps)) {
      if (response.payload?.case === "result") ids.push((response.payload.value.persons ?? []).map((p) => p.trackId ?? 0));
    }
    return { ids, error: undefined };
  } catch (error) {
    return { ids, error };
  }
}

describe("tracking across keypoint schemas", () => {
  const oks = { enabled: true, metric: TrackingMetric.OKS, matchThreshold: 0.5, sceneCutThreshold: 1 };

  it("tracks a 33-keypoint model's people by OKS with its sigmas, and starts new tracks when the model swaps to 17 keypoints mid-stream", async () => {
    // Two people walking right, 2 px a frame; frames 1-3 from a BlazePose-33 model, 4-6 from a COCO-17 one.
    const script = (i: number): ScriptedAnswer => (i <= 3 ? { keypoints: 33, sigmas: BLAZEPOSE33.sigmas, xs: [100 + 2 * i, 400 + 2 * i] } : { keypoints: 17, sigmas: COCO17.sigmas, xs: [100 + 2 * i, 400 + 2 * i] });
    const { ids, error } = await trackIds(script, 6, { tracking: oks, smoothing: { enabled: true } });
    expect(error).toBeUndefined();
    // The 17-keypoint people are matched against none of the 33-keypoint tracks; no id names two people.
    expect(ids).toEqual([[1, 2], [1, 2], [1, 2], [3, 4], [3, 4], [3, 4]]);
  });

  it("matches by the sigmas the model names: the same step is one person under wide sigmas and two under COCO's", async () => {
    // A 30 px step of a 60x160 person: far beyond COCO's tolerances, well within sigmas of 1.
    const step = (sigmas: readonly number[]) => (i: number): ScriptedAnswer => ({ keypoints: 17, sigmas, xs: [100 + 30 * i] });
    expect((await trackIds(step(new Array<number>(17).fill(1)), 2, { tracking: oks })).ids).toEqual([[1], [1]]);
    expect((await trackIds(step(COCO17.sigmas), 2, { tracking: oks })).ids).toEqual([[1], [2]]);
  });

  it("tracks a model that names no sigmas by box IoU instead of failing the stream", async () => {
    const script = (i: number): ScriptedAnswer => ({ keypoints: 33, xs: [100 + 2 * i, 400 + 2 * i] });
    const { ids, error } = await trackIds(script, 3, { tracking: oks });
    expect(error).toBeUndefined();
    expect(ids).toEqual([[1, 2], [1, 2], [1, 2]]);
  });
});

describe("stream routing", () => {
  it("asks a routing processor for each frame's processor, keyed by the stream's name, or its id when it has none", async () => {
    const serving = new FakeProcessor();
    const canary = new FakeProcessor();
    const keys: string[] = [];
    const router = {
      process: (f: Frame, settings: unknown, call: FrameCall) => serving.process(f, settings, call),
      forStream: (key: string) => {
        keys.push(key);
        return key === "cam-9" ? canary : serving;
      },
    };
    const controller = new AbortController();
    const deps = { ...streamDeps(serving), processor: router };
    const named = await collectInit(runStream(messages(options({ streamName: "cam-9" }), frame(1), frame(2)), controller.signal, deps));
    const unnamed = await collectInit(runStream(messages(options(), frame(3)), controller.signal, { ...deps, streamId: "stream-7" }));
    expect([named.ids, unnamed.ids]).toEqual([[1, 2], [3]]);
    expect(keys).toEqual(["cam-9", "cam-9", "stream-7"]);
    expect([canary.calls, serving.calls]).toEqual([2, 1]);
  });
});
