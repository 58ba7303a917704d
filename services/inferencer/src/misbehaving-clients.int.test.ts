import { spawn } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { ModelRegistry, NatsBus } from "@poseloop/bus";
import { AppError, Code, sleep, type LogFields, type Logger } from "@poseloop/core";
import { createClient, methodPath } from "@poseloop/grpc";
import {
  DeliveryMode,
  InferenceService,
  StreamKeypointsRequestSchema,
  type Frame,
  type StreamKeypointsResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { waitFor } from "@poseloop/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { BatchScheduler } from "./batch-scheduler.js";
import { loadConfig } from "./config.js";
import { startInferencer } from "./inferencer.js";
import { InferenceWorkerPool } from "./worker-pool.js";
import { jpegFrame, pacedJpegFrames, streamRequests, syntheticJpegs, type InferencerHarness } from "./testing/harness.js";
import { buildTestModel, publishTestModel } from "./testing/test-models.js";

const natsUrl = inject("natsUrl");
const MAX_STREAMS = 3;
const MODEL = "misbehaving";

type LogLine = { level: "warn" | "error"; msg: string; fields: LogFields | undefined };

/** A logger that keeps the warnings and errors of the inferencer, so a test can show its log stayed clean. */
function recordingLogger(lines: LogLine[]): Logger {
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg, fields) => void lines.push({ level: "warn", msg, fields }),
    error: (msg, fields) => void lines.push({ level: "error", msg, fields }),
    child: () => logger,
  };
  return logger;
}

/** startHarness with the inferencer's log recorded (startHarness silences it). */
async function startRecordedHarness(lines: LogLine[]): Promise<InferencerHarness> {
  const config = loadConfig({
    POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
    POSELOOP_NATS_URL: natsUrl,
    POSELOOP_MODEL: MODEL,
    POSELOOP_MAX_STREAMS: String(MAX_STREAMS),
    // Frames arriving within a few ms of each other share a batch, so a cancelled stream's frames ride with others'.
    POSELOOP_BATCH_WAIT: "5ms",
  });
  const inferencer = await startInferencer(config, recordingLogger(lines));
  const publisherBus = await NatsBus.connect({ servers: natsUrl, name: `publisher-${MODEL}`, reconnectTimeWaitMs: 100 });
  const registry = await ModelRegistry.open(publisherBus);
  const client = createClient(InferenceService, `127.0.0.1:${inferencer.address.port}`);
  return {
    inferencer,
    client,
    registry,
    publisherBus,
    modelName: MODEL,
    close: async () => {
      client.$close();
      await inferencer.stop();
      await publisherBus.close();
    },
  };
}

let harness: InferencerHarness;
let jpegs: Uint8Array[];
const logLines: LogLine[] = [];
const unhandled: unknown[] = [];
const recordUnhandled = (reason: unknown): void => void unhandled.push(reason);

beforeAll(async () => {
  process.on("unhandledRejection", recordUnhandled);
  const [model, frames] = await Promise.all([buildTestModel({ seed: 1 }), syntheticJpegs(6)]);
  jpegs = frames;
  harness = await startRecordedHarness(logLines);
  await publishTestModel(harness.registry, MODEL, model);
  await harness.inferencer.models.waitForServing(20_000);
});

afterAll(async () => {
  await harness?.close();
  process.off("unhandledRejection", recordUnhandled);
});

// Whatever a client does, the server logs no error and leaves no promise rejected unhandled.
afterEach(() => {
  expect(logLines.filter((line) => line.level === "error")).toEqual([]);
  expect(unhandled).toEqual([]);
});

function frame(i: number): Frame {
  return jpegFrame(i, jpegs[i % jpegs.length] as Uint8Array);
}

/** Frames 0..count-1 at `fps`, calling `at(i)` before frame i is sent. */
function paced(count: number, fps: number, at?: (i: number) => void): AsyncGenerator<Frame> {
  return pacedJpegFrames(jpegs, count, fps, at);
}

/** Frames 0..count-1 as fast as gRPC flow control takes them. */
function* burst(count: number): Generator<Frame> {
  for (let i = 0; i < count; i++) yield frame(i);
}

function results(responses: StreamKeypointsResponse[]) {
  return responses.flatMap((r) => (r.payload.case === "result" ? [r.payload.value] : []));
}

/** Every frame 0..count-1 answered once, in order, without an error status. */
function expectAllAnswered(responses: StreamKeypointsResponse[], count: number): void {
  const answered = results(responses);
  expect(answered.map((r) => Number(r.frameId))).toEqual(Array.from({ length: count }, (_, i) => i));
  expect(answered.filter((r) => (r.status?.code ?? 0) !== 0).map((r) => r.status?.message)).toEqual([]);
  expect(answered.every((r) => r.persons.length === 1)).toBe(true);
}

/** A well-behaved client: sends `frames`, half-closes, reads everything; the call must end with OK. */
async function wellBehaved(frames: AsyncIterable<Frame> | Iterable<Frame>): Promise<StreamKeypointsResponse[]> {
  const responses: StreamKeypointsResponse[] = [];
  for await (const response of harness.client.streamKeypoints(streamRequests({}, frames))) responses.push(response);
  return responses;
}

/**
 * MAX_STREAMS new streams open at the same time, each accepted before any sends a frame, then each answers two
 * frames: every slot is free. A RESOURCE_EXHAUSTED means a slot is still held; polled until `timeoutMs`.
 */
async function expectEverySlotFree(timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const gated = async function* (): AsyncGenerator<Frame> {
        await gate;
        yield* burst(2);
      };
      const streams = Array.from({ length: MAX_STREAMS }, () => harness.client.streamKeypoints(streamRequests({}, gated()))[Symbol.asyncIterator]());
      const first = await Promise.allSettled(streams.map((stream) => stream.next()));
      open();
      const rest = await Promise.allSettled(
        streams.map(async (stream) => {
          const got: StreamKeypointsResponse[] = [];
          for (let r = await stream.next(); r.done !== true; r = await stream.next()) got.push(r.value);
          return got;
        }),
      );
      const failures = [...first, ...rest].flatMap((outcome) => (outcome.status === "rejected" ? [outcome.reason as unknown] : []));
      const unexpected = failures.find((error) => !AppError.is(error, Code.RESOURCE_EXHAUSTED));
      if (unexpected !== undefined) throw AppError.from(unexpected);
      if (failures.length > 0) return undefined;
      for (const outcome of first) expect(outcome.status === "fulfilled" ? outcome.value.value?.payload.case : undefined).toBe("accepted");
      for (const outcome of rest) expect(outcome.status === "fulfilled" ? results(outcome.value).length : 0).toBe(2);
      return true;
    },
    { timeoutMs, intervalMs: 100, what: `${MAX_STREAMS} streams admitted at once` },
  );
}

/**
 * A StreamKeypoints client in a process of its own, on bare @grpc/grpc-js with requests serialized here: sends
 * StreamOptions, then a frame every 33 ms forever, reads every response, and prints "streaming" once five
 * responses came back. Killing it with SIGKILL leaves the server only the TCP close to notice.
 */
const DYING_CLIENT = `
import { Client, credentials } from "@grpc/grpc-js";
const options = Buffer.from(process.env.OPTIONS, "base64");
const frame = Buffer.from(process.env.FRAME, "base64");
const client = new Client(process.env.TARGET, credentials.createInsecure());
const call = client.makeBidiStreamRequest(process.env.METHOD, (b) => b, (b) => b);
let received = 0;
call.on("data", () => { if (++received === 5) process.stdout.write("streaming\\n"); });
call.on("error", (error) => { process.stderr.write(String(error)); process.exit(2); });
call.write(options);
for (;;) {
  if (!call.write(frame)) await new Promise((resolve) => call.once("drain", resolve));
  await new Promise((resolve) => setTimeout(resolve, 33));
}
`;

describe("misbehaving clients of StreamKeypoints", () => {
  it("dies: a client process killed with SIGKILL mid-stream frees its slot on the TCP close; a concurrent stream is unaffected", async () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", DYING_CLIENT], {
      // Bare specifiers of an -e script resolve from the working directory.
      cwd: dirname(fileURLToPath(import.meta.url)),
      env: {
        ...process.env,
        TARGET: `127.0.0.1:${harness.inferencer.address.port}`,
        METHOD: methodPath(InferenceService.typeName, "StreamKeypoints"),
        OPTIONS: Buffer.from(toBinary(StreamKeypointsRequestSchema, create(StreamKeypointsRequestSchema, { payload: { case: "options", value: { delivery: DeliveryMode.EVERY_FRAME } } }))).toString("base64"),
        FRAME: Buffer.from(toBinary(StreamKeypointsRequestSchema, create(StreamKeypointsRequestSchema, { payload: { case: "frame", value: frame(0) } }))).toString("base64"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? code)));
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => void (stderr += chunk.toString()));
    try {
      await Promise.race([
        new Promise<void>((resolve) => child.stdout.on("data", (chunk: Buffer) => chunk.toString().includes("streaming") && resolve())),
        exited.then((code) => {
          throw new Error(`the dying client exited (${String(code)}) before streaming: ${stderr}`);
        }),
      ]);
      let killedAt = 0;
      const survivor = wellBehaved(
        paced(60, 30, (i) => {
          if (i === 20) {
            child.kill("SIGKILL");
            killedAt = Date.now();
          }
        }),
      );
      expect(await exited).toBe("SIGKILL");
      expectAllAnswered(await survivor, 60);
      // The server's keepalive would take minutes (2 min ping, 20 s ack): within seconds, only the TCP close tells.
      await expectEverySlotFree(5_000);
      expect(Date.now() - killedAt).toBeLessThan(6_000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("half-closes: N frames then the end of the request side are all answered in order, then the call ends OK", async () => {
    // Sent as fast as flow control lets them: the half-close arrives while frames are still in the pipeline.
    expectAllAnswered(await wellBehaved(burst(20)), 20);
  });

  it("half-closes right after StreamOptions: accepted, no results, OK", async () => {
    const responses = await wellBehaved([]);
    expect(responses.map((r) => r.payload.case)).toEqual(["accepted"]);
  });

  it("exceeds its deadline: a 1.5 s stream sending at 30 fps gets DEADLINE_EXCEEDED, its slot frees, others are unaffected", async () => {
    const survivor = wellBehaved(paced(75, 30));
    const started = Date.now();
    const answered: bigint[] = [];
    const error = await (async () => {
      for await (const r of harness.client.streamKeypoints(streamRequests({}, paced(1_000, 30)), { timeoutMs: 1_500 })) {
        if (r.payload.case === "result") answered.push(r.payload.value.frameId);
      }
    })().catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect(AppError.is(error, Code.DEADLINE_EXCEEDED), String(error)).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(1_400);
    expect(elapsed).toBeLessThan(3_000);
    // Answered until the deadline, in order.
    expect(answered.length).toBeGreaterThan(20);
    expect(answered.map(Number)).toEqual(Array.from({ length: answered.length }, (_, i) => i));
    expectAllAnswered(await survivor, 75);
    await expectEverySlotFree(3_000);
  });

  it("cancels mid-batch: streams cancelled with frames in a batch beside other streams' frames lose none of the others' frames", async () => {
    // Observed, not changed (the spies call through): the stream of each frame job, and the batches run.
    const submits = vi.spyOn(BatchScheduler.prototype, "submit");
    const batches = vi.spyOn(InferenceWorkerPool.prototype, "infer");
    /** The frame jobs of each batch running now. */
    const runningBatches = () => batches.mock.calls.flatMap(([, jobs], i) => (batches.mock.settledResults[i]?.type === "incomplete" ? [jobs] : []));
    try {
      // Two streams flood until the cancelling rounds are over; the third slot is taken again and again by a
      // client that cancels after its third result, with its max_in_flight window full.
      let flooding = true;
      const flood = (sent: { count: number }) =>
        (function* () {
          for (let i = 0; flooding || i < 30; i++, sent.count++) yield frame(i);
        })();
      const sentByOthers = [{ count: 0 }, { count: 0 }];
      const others = sentByOthers.map((sent) => wellBehaved(flood(sent)));
      const cancels: { streamId: string; running: ReturnType<typeof runningBatches> }[] = [];
      for (let attempt = 0; cancels.length < 5 && attempt < 50; attempt++) {
        const controller = new AbortController();
        let streamId = "";
        let received = 0;
        const outcome = await (async () => {
          for await (const r of harness.client.streamKeypoints(streamRequests({ maxInFlight: 8 }, burst(1_000)), { signal: controller.signal })) {
            if (r.payload.case === "accepted") streamId = r.payload.value.streamId;
            if (r.payload.case === "result" && ++received === 3) {
              cancels.push({ streamId, running: runningBatches() });
              controller.abort();
            }
          }
        })().catch((e: unknown) => e);
        // The previous round's slot frees a moment after its cancel.
        if (AppError.is(outcome, Code.RESOURCE_EXHAUSTED)) await sleep(20);
        else expect(AppError.is(outcome, Code.CANCELLED), String(outcome)).toBe(true);
      }
      flooding = false;
      const answered = await Promise.all(others);
      expect(cancels).toHaveLength(5);
      // At least one cancel came while a batch mixing that stream's frames with another stream's was running.
      const streamOf = new Map(submits.mock.calls.map(([job, stream]) => [job, stream]));
      const midBatch = cancels.filter(({ streamId, running }) =>
        running.some((jobs) => {
          const streams = new Set(jobs.map((job) => streamOf.get(job)));
          return streams.has(streamId) && streams.size > 1;
        }),
      );
      expect(midBatch.length).toBeGreaterThan(0);
      answered.forEach((responses, i) => expectAllAnswered(responses, sentByOthers[i]?.count ?? -1));
      await expectEverySlotFree(3_000);
    } finally {
      vi.restoreAllMocks();
    }
  });
});
