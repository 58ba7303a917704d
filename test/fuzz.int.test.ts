import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import fc from "fast-check";
import { parseDocument, stringify } from "yaml";
import { ModelRegistry, NatsBus } from "@poseloop/bus";
import { tinyExperiment } from "@poseloop/cli/testing";
import { AppError, Code, codeName } from "@poseloop/core";
import { createClient } from "@poseloop/grpc";
import { buildTestModel, plainPng, publishTestModel, syntheticJpegs } from "@poseloop/inferencer/testing";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import {
  DeliveryMode,
  ImageFormat,
  InferenceService,
  PixelFormat,
  TrackingMetric,
  type FrameSchema,
  type StreamKeypointsRequestSchema,
  type StreamOptionsSchema,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, OptimizerKind, PublishMode, ScheduleKind, type TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { TrainerService, type StartTrainingRequestSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// Issue 23: both services as real processes, fed thousands of generated hostile requests. Whatever comes in,
// each call ends (results or a status, never a hang), a status names a clear code and never internal text,
// and both processes outlive it without growing without bound. The NATS server is this file's own: the
// trainer queues the jobs it accepts, and a trainer of another test file must not take them.
const TRAINER = "services/trainer/src/main.ts";
const INFERENCER = "services/inferencer/src/main.ts";
const MODEL = `fuzz-${process.pid}`;
const TRAIN_MODEL = `fuzz-train-${process.pid}`;
const SEED = 42;
// Calls at once: enough to overlap streams in the inferencer's batcher, few enough for a 2-core runner.
const CONCURRENCY = 8;
const STREAM_BATCHES = 95;
// The trainer checks each experiment YAML in a worker thread of its own, at most 4 at once (more are refused
// with RESOURCE_EXHAUSTED). From sources a worker takes seconds to load on a 2-core runner, so YAML texts
// are the scarce part of the budget; config objects and overrides skip the worker and are cheap.
const YAML_CONCURRENCY = 4;
const YAML_BATCHES = 10;
const CONFIG_BATCHES = 125;
// A call that outlives this has hung: the slowest honest stream here is 16 tiny frames.
const CALL_DEADLINE_MS = 20_000;
// RSS may grow by this much over the post-warm-up value. Generous on purpose: V8 grows its heap lazily and
// onnxruntime keeps arenas per batch shape, so tens of MB are normal; a leak per call (a session, a frame
// buffer, a job record of KB) over 5,000 calls reaches hundreds of MB, which this bound still catches.
const RSS_GROWTH_BOUND_BYTES = 300 * 1024 * 1024;

const INTERNAL_TEXT = /onnxruntime_src|\.cc:\d*|node_modules|\n\s*at |\bat .*\.[cm]?[jt]s:\d+|file:\/\/|\/work\/|\/src\/[\w/-]+\.ts/;
const CLEAR_TRAINING_CODES: ReadonlySet<number> = new Set([
  Code.OK,
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.FAILED_PRECONDITION,
  Code.PERMISSION_DENIED,
  Code.RESOURCE_EXHAUSTED,
  Code.ALREADY_EXISTS,
  Code.ABORTED,
]);

type StreamRequest = MessageInitShape<typeof StreamKeypointsRequestSchema>;
type StreamOptionsInit = MessageInitShape<typeof StreamOptionsSchema>;
type StartTrainingInit = MessageInitShape<typeof StartTrainingRequestSchema>;
type TrainConfigInit = MessageInitShape<typeof TrainConfigSchema>;

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: ServiceProcess | undefined;
let inferencer: ServiceProcess | undefined;
let inference: ReturnType<typeof createClient<(typeof InferenceService)["method"]>>;
let training: ReturnType<typeof createClient<(typeof TrainerService)["method"]>>;
let validPng: Uint8Array;
let validJpeg: Uint8Array;
const warmRss = { trainer: 0, inferencer: 0 };
const generated = { streams: 0, streamRequests: 0, startTraining: 0, framesAnsweredOk: 0, streamStatuses: new Map<string, number>() };

async function rssBytes(service: ServiceProcess | undefined): Promise<number> {
  const status = await readFile(`/proc/${service?.child.pid ?? 0}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error("no VmRSS in /proc status");
  return Number(kb) * 1024;
}

async function healthOf(service: ServiceProcess | undefined): Promise<HealthCheckResponse_ServingStatus> {
  const client = createClient(Health, `127.0.0.1:${service?.port ?? 0}`, { defaultTimeoutMs: 5_000 });
  try {
    return (await client.check({ service: "" })).status;
  } finally {
    client.$close();
  }
}

/** Resolves with `promise`, or rejects once `ms` pass: a safety net beside the gRPC deadline. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not end within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first internal detail in a text a client sees (a native source, an install path, a stack frame), or undefined. */
function internalText(text: string): string | undefined {
  return INTERNAL_TEXT.exec(text)?.[0];
}

// ---------------------------------------------------------------------------------------------------------
// StreamKeypoints arbitraries
// ---------------------------------------------------------------------------------------------------------

// Float fields are float32 on the wire: values outside it (1e300) fail in the client, not at the server.
const weirdFloat = fc.oneof(
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 0, -0, 1e-45, 3.4e38, -3.4e38),
  fc.float(),
  fc.float({ min: -2, max: 2, noNaN: true }),
);
const uint32 = fc.oneof(fc.constantFrom(0, 1, 2, 255, 65_535, 2 ** 31 - 1, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 }), fc.nat({ max: 64 }));
const openEnum = (known: readonly number[]) => fc.oneof(fc.constantFrom(...known), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
const oddString = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.string({ unit: "grapheme", maxLength: 60 }),
  fc.nat({ max: 20_000 }).map((n) => "x".repeat(n)),
  fc.constantFrom("../../etc/passwd", "a\u0000b", "%s%s%n", "${jndi:ldap://x}", "\u202e\ud83d\ude00", "demo\n{\"level\":\"fatal\"}"),
);

const streamOptions: fc.Arbitrary<StreamOptionsInit> = fc.record(
  {
    modelName: fc.oneof(fc.constant(MODEL), fc.constant(""), oddString),
    delivery: openEnum([DeliveryMode.UNSPECIFIED, DeliveryMode.EVERY_FRAME, DeliveryMode.LATEST_FRAME_WINS]),
    maxInFlight: uint32,
    minKeypointScore: weirdFloat,
    maxPersons: uint32,
    smoothing: fc.record({ enabled: fc.boolean(), minCutoff: weirdFloat, beta: weirdFloat, derivativeCutoff: weirdFloat }, { requiredKeys: [] }),
    tracking: fc.record(
      { enabled: fc.boolean(), metric: openEnum([TrackingMetric.UNSPECIFIED, TrackingMetric.IOU, TrackingMetric.OKS]), matchThreshold: weirdFloat, maxAgeFrames: uint32 },
      { requiredKeys: [] },
    ),
    flipTest: fc.boolean(),
    streamName: oddString,
  },
  { requiredKeys: [] },
);

/** Sane options most of the time, so that frames reach the model; arbitrary ones otherwise. */
const leadingOptions: fc.Arbitrary<StreamOptionsInit> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<StreamOptionsInit>({ modelName: MODEL, delivery: DeliveryMode.EVERY_FRAME }, { delivery: DeliveryMode.LATEST_FRAME_WINS, maxInFlight: 2 }, {}) },
  { weight: 2, arbitrary: streamOptions },
);

type ImageRecipe =
  | { kind: "valid-png" | "valid-jpeg"; format: number }
  | { kind: "truncated-png" | "truncated-jpeg"; keep: number; format: number }
  | { kind: "random"; bytes: Uint8Array; format: number }
  | { kind: "header"; header: "png" | "jpeg" | "webp"; tail: Uint8Array; format: number }
  | { kind: "flipped"; at: number; format: number }
  | { kind: "none" }
  | { kind: "raw"; width: number; height: number; pixel: number; stride: number; bytes: number; fill: number };

const imageFormat = openEnum([ImageFormat.UNSPECIFIED, ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP]);
const imageRecipe: fc.Arbitrary<ImageRecipe> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("valid-png" as const), format: fc.constantFrom(ImageFormat.PNG, ImageFormat.UNSPECIFIED, ImageFormat.JPEG, ImageFormat.WEBP) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("valid-jpeg" as const), format: fc.constantFrom(ImageFormat.JPEG, ImageFormat.UNSPECIFIED, ImageFormat.PNG) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom("truncated-png" as const, "truncated-jpeg" as const), keep: fc.double({ min: 0, max: 1, noNaN: true }), format: imageFormat }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("random" as const), bytes: fc.uint8Array({ maxLength: 2048 }), format: imageFormat }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("header" as const), header: fc.constantFrom("png" as const, "jpeg" as const, "webp" as const), tail: fc.uint8Array({ maxLength: 512 }), format: imageFormat }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("flipped" as const), at: fc.double({ min: 0, max: 1, noNaN: true }), format: imageFormat }) },
  { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("raw" as const),
      width: fc.oneof(fc.nat({ max: 96 }), uint32),
      height: fc.oneof(fc.nat({ max: 96 }), uint32),
      pixel: openEnum([PixelFormat.UNSPECIFIED, PixelFormat.RGB8, PixelFormat.BGR8, PixelFormat.RGBA8, PixelFormat.GRAY8]),
      stride: fc.oneof(fc.constant(0), uint32),
      bytes: fc.oneof(fc.nat({ max: 96 * 96 * 4 }), fc.constantFrom(0, 1, 3, 48 * 64 * 3, 32 * 32 * 3, 32 * 32 * 4)),
      fill: fc.nat({ max: 255 }),
    }),
  },
);

const box = fc.record({ x: weirdFloat, y: weirdFloat, width: weirdFloat, height: weirdFloat, score: weirdFloat }, { requiredKeys: [] });
const frameRecipe = fc.record({
  image: imageRecipe,
  ptsUs: fc.oneof(fc.constant(undefined), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })),
  boxes: fc.oneof({ weight: 3, arbitrary: fc.constant([]) }, { weight: 2, arbitrary: fc.array(box, { maxLength: 6 }) }, { weight: 1, arbitrary: fc.array(box, { minLength: 40, maxLength: 200 }) }),
});
type FrameRecipe = typeof frameRecipe extends fc.Arbitrary<infer T> ? T : never;

type RequestRecipe = { kind: "options"; options: StreamOptionsInit } | { kind: "frame"; frame: FrameRecipe } | { kind: "empty" };
const requestRecipe: fc.Arbitrary<RequestRecipe> = fc.oneof(
  // Options again or an empty message may end a stream, so they are rarer than frames.
  { weight: 20, arbitrary: frameRecipe.map((frame) => ({ kind: "frame" as const, frame })) },
  { weight: 1, arbitrary: streamOptions.map((options) => ({ kind: "options" as const, options })) },
  { weight: 1, arbitrary: fc.constant({ kind: "empty" as const }) },
);
const streamRecipe = fc.record({
  // Most streams start the way a client must; some send frames first, or nothing but options.
  first: fc.oneof({ weight: 5, arbitrary: leadingOptions.map((options) => ({ kind: "options" as const, options })) }, { weight: 1, arbitrary: requestRecipe }),
  rest: fc.array(requestRecipe, { maxLength: 15 }),
});
type StreamRecipe = typeof streamRecipe extends fc.Arbitrary<infer T> ? T : never;

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_MAGIC = [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00];
const WEBP_MAGIC = [0x52, 0x49, 0x46, 0x46, 0xff, 0xff, 0xff, 0x7f, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x20];

function frameImage(recipe: ImageRecipe): NonNullable<MessageInitShape<typeof FrameSchema>["image"]> {
  const encoded = (data: Uint8Array, format: number) => ({ case: "encoded" as const, value: { data, format } });
  switch (recipe.kind) {
    case "valid-png":
      return encoded(validPng, recipe.format);
    case "valid-jpeg":
      return encoded(validJpeg, recipe.format);
    case "truncated-png":
    case "truncated-jpeg": {
      const source = recipe.kind === "truncated-png" ? validPng : validJpeg;
      return encoded(source.subarray(0, Math.floor(recipe.keep * (source.length - 1))), recipe.format);
    }
    case "random":
      return encoded(recipe.bytes, recipe.format);
    case "header": {
      const magic = recipe.header === "png" ? PNG_MAGIC : recipe.header === "jpeg" ? JPEG_MAGIC : WEBP_MAGIC;
      return encoded(Uint8Array.from([...magic, ...recipe.tail]), recipe.format);
    }
    case "flipped": {
      const data = Uint8Array.from(validPng);
      const at = Math.floor(recipe.at * (data.length - 1));
      data[at] = (data[at] ?? 0) ^ 0xff;
      return encoded(data, recipe.format);
    }
    case "none":
      return { case: undefined };
    case "raw":
      return {
        case: "raw",
        value: { width: recipe.width, height: recipe.height, format: recipe.pixel, stride: recipe.stride, data: new Uint8Array(recipe.bytes).fill(recipe.fill) },
      };
  }
}

function toRequests(recipe: StreamRecipe): { requests: StreamRequest[]; frameIds: bigint[] } {
  const requests: StreamRequest[] = [];
  const frameIds: bigint[] = [];
  for (const request of [recipe.first, ...recipe.rest]) {
    if (request.kind === "options") requests.push({ payload: { case: "options", value: request.options } });
    else if (request.kind === "empty") requests.push({});
    else {
      const frameId = BigInt(frameIds.length + 1);
      frameIds.push(frameId);
      const { ptsUs, boxes, image } = request.frame;
      requests.push({ payload: { case: "frame", value: { frameId, ...(ptsUs === undefined ? {} : { ptsUs }), image: frameImage(image), personBoxes: [...boxes] } } });
    }
  }
  return { requests, frameIds };
}

async function* sent<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}

interface StreamOutcome {
  code: number;
  message: string;
  answered: Set<bigint>;
  frameStatuses: { code: number; message: string }[];
}

async function runStream(requests: StreamRequest[]): Promise<StreamOutcome> {
  const outcome: StreamOutcome = { code: Code.OK, message: "", answered: new Set(), frameStatuses: [] };
  try {
    for await (const response of inference.streamKeypoints(sent(requests), { timeoutMs: CALL_DEADLINE_MS })) {
      if (response.payload.case === "result") {
        const result = response.payload.value;
        outcome.answered.add(result.frameId);
        if (result.status !== undefined && result.status.code !== Code.OK) outcome.frameStatuses.push({ code: result.status.code, message: result.status.message });
        else generated.framesAnsweredOk += 1;
      } else if (response.payload.case === "dropped") {
        for (const id of response.payload.value.frameIds) outcome.answered.add(id);
      }
    }
  } catch (error) {
    const appError = AppError.from(error);
    outcome.code = appError.code;
    outcome.message = appError.message;
  }
  return outcome;
}

/** What is wrong with how a stream ended, or undefined. */
function streamProblem(outcome: StreamOutcome, frameIds: bigint[]): string | undefined {
  if (outcome.code === Code.DEADLINE_EXCEEDED) return `hang: no end within ${CALL_DEADLINE_MS} ms (${outcome.message})`;
  if (outcome.code === Code.INTERNAL || outcome.code === Code.UNKNOWN) return `${codeName(outcome.code)} status: ${outcome.message}`;
  const leaked = internalText(outcome.message);
  if (leaked !== undefined) return `status ${codeName(outcome.code)} leaks "${leaked}": ${outcome.message}`;
  for (const status of outcome.frameStatuses) {
    if (status.code === Code.INTERNAL || status.code === Code.UNKNOWN) return `frame status ${codeName(status.code)}: ${status.message}`;
    const leakedByFrame = internalText(status.message);
    if (leakedByFrame !== undefined) return `frame status ${codeName(status.code)} leaks "${leakedByFrame}": ${status.message}`;
  }
  if (outcome.code === Code.OK) {
    const unanswered = frameIds.filter((id) => !outcome.answered.has(id));
    if (unanswered.length > 0) return `stream ended OK without answering frames ${unanswered.join(",")}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// StartTraining arbitraries
// ---------------------------------------------------------------------------------------------------------

const weirdScalar = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, "", "NaN", ".nan", ".inf", "-.inf", "1e999", "-1", "0x7fffffff", "99999999999999999999999999", "~", "yes", "no", "[", "{", "*x"),
  fc.double(),
  fc.integer(),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map((n) => n.toString()),
  oddString,
);
const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: weirdScalar },
  { weight: 1, arbitrary: fc.array(weirdScalar, { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), weirdScalar, { maxKeys: 4 }) },
);

const TINY_PATHS = [
  ["NAME"],
  ["WORKERS"],
  ["DATASET"],
  ["DATASET", "DATASET"],
  ["DATASET", "SYNTHETIC", "TRAIN_IMAGES"],
  ["DATASET", "SYNTHETIC", "VAL_IMAGES"],
  ["DATASET", "SYNTHETIC", "IMAGE_SIZE"],
  ["DATASET", "SYNTHETIC", "MAX_PEOPLE"],
  ["MODEL"],
  ["MODEL", "NAME"],
  ["MODEL", "IMAGE_SIZE"],
  ["MODEL", "HEATMAP_SIZE"],
  ["MODEL", "SIGMA"],
  ["MODEL", "EXTRA", "CHANNELS"],
  ["TRAIN", "OPTIMIZER"],
  ["TRAIN", "LR"],
  ["TRAIN", "BATCH_SIZE_PER_GPU"],
  ["TRAIN", "END_EPOCH"],
  ["TRAIN", "BEGIN_EPOCH"],
  ["TRAIN", "LR_STEP"],
  ["TEST", "USE_GT_BBOX"],
  ["QUANT", "ENABLED"],
  ["QUANT", "CALIBRATION_SAMPLES"],
  ["QUANT", "MAX_AP_DROP"],
  ["PUBLISH", "MODEL_NAME"],
  ["PUBLISH"],
  ["GPUS"],
  ["OUTPUT_DIR"],
  ["UNKNOWN_KEY"],
  ["TRAIN", "UNKNOWN"],
];
const OVERRIDE_KEYS = ["TRAIN.LR", "TRAIN.END_EPOCH", "TRAIN.BATCH_SIZE_PER_GPU", "MODEL.IMAGE_SIZE", "MODEL.NAME", "DATASET.DATASET", "PUBLISH.MODEL_NAME", "TRAIN.LR_STEP", "QUANT.ENABLED"];

const tinyMutation = fc.record({
  edits: fc.array(
    fc.record({ path: fc.constantFrom(...TINY_PATHS), action: fc.constantFrom("set" as const, "delete" as const), value: weirdValue }),
    { minLength: 1, maxLength: 4 },
  ),
});

function mutateTiny(edits: { path: string[]; action: "set" | "delete"; value: unknown }[]): string {
  const document = parseDocument(tinyExperiment(TRAIN_MODEL, "fuzz"));
  for (const edit of edits) {
    try {
      if (edit.action === "delete") document.deleteIn(edit.path);
      else document.setIn(edit.path, edit.value);
    } catch {
      // setIn below a scalar that an earlier edit made: the YAML stays as it was.
    }
  }
  return document.toString();
}

const deepNesting = fc.record({ depth: fc.integer({ min: 50, max: 5_000 }), style: fc.constantFrom("flow-seq", "flow-map", "block-map", "block-seq") }).map(({ depth, style }) => {
  switch (style) {
    case "flow-seq":
      return `${"[".repeat(depth)}1${"]".repeat(depth)}`;
    case "flow-map":
      return `${"{a: ".repeat(depth)}1${"}".repeat(depth)}`;
    case "block-map":
      return Array.from({ length: Math.min(depth, 800) }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n") + " 1\n";
    default:
      return Array.from({ length: Math.min(depth, 800) }, (_, i) => `${" ".repeat(2 * i)}-`).join("\n") + " 1\n";
  }
});
// Billion laughs and friends: aliases that expand exponentially, a self-referencing merge key.
const aliasBomb = fc.record({ levels: fc.integer({ min: 2, max: 12 }), width: fc.integer({ min: 2, max: 10 }), where: fc.constantFrom("root", "train") }).map(({ levels, width, where }) => {
  const lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"];
  for (let i = 1; i < levels; i++) lines.push(`a${i}: &a${i} [${Array.from({ length: width }, () => `*a${i - 1}`).join(", ")}]`);
  const bomb = lines.join("\n");
  return where === "root" ? `${bomb}\nNAME: *a${levels - 1}\n` : `${tinyExperiment(TRAIN_MODEL, "fuzz")}${bomb}\nTRAIN_BOMB:\n  <<: *a${levels - 1}\n`;
});
const yamlTexts = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 300 }),
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.jsonValue({ maxDepth: 6 }).map((value) => stringify(value)),
  fc.anything({ maxDepth: 4, withNullPrototype: true, withMap: true, withSet: true, withBigInt: true, withDate: true, withTypedArray: true }).map((value) => {
    try {
      return stringify(value, { aliasDuplicateObjects: true });
    } catch {
      return String(value);
    }
  }),
  tinyMutation.map(({ edits }) => mutateTiny(edits)),
  tinyMutation.map(({ edits }) => mutateTiny(edits)),
  deepNesting,
  aliasBomb,
  fc.constantFrom(
    "",
    "---\n...\n---\n",
    "&a [*a]",
    "a: &a\n  b: *a\n",
    "<<: *undefined\n",
    "!!binary AAAA",
    "!!js/function 'function(){}'",
    "NAME: !!python/object:os.system ls",
    "? [a, b]\n: c\n",
    "TRAIN:\n  LR: 1e999\n  END_EPOCH: 99999999999999999999\n",
    "%YAML 9.9\n---\na: 1\n",
    "\ufeffNAME: bom",
  ),
);

const maybe = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });
const configObject: fc.Arbitrary<TrainConfigInit> = fc
  .record(
    {
      name: oddString,
      architecture: openEnum([Architecture.UNSPECIFIED, Architecture.LITE]),
      width: uint32,
      height: uint32,
      channels: fc.array(uint32, { maxLength: 6 }),
      dataKind: openEnum([DatasetKind.UNSPECIFIED, DatasetKind.SYNTHETIC]),
      trainImages: uint32,
      valImages: uint32,
      imageWidth: uint32,
      imageHeight: uint32,
      maxPeople: uint32,
      optimizer: openEnum([OptimizerKind.UNSPECIFIED, OptimizerKind.ADAM]),
      lr: weirdFloat,
      schedule: openEnum([ScheduleKind.UNSPECIFIED, ScheduleKind.MULTISTEP]),
      lrSteps: fc.array(uint32, { maxLength: 6 }),
      lrFactor: weirdFloat,
      batchSize: uint32,
      endEpoch: uint32,
      beginEpoch: uint32,
      seed: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      publishMode: openEnum([PublishMode.UNSPECIFIED, PublishMode.BEST]),
      modelName: fc.oneof(fc.constant(TRAIN_MODEL), oddString),
      maxApDrop: weirdFloat,
      calibrationSamples: uint32,
    },
    // Each field is left at the tiny config's value unless generated.
    { requiredKeys: [] },
  )
  .map((f) => ({
    name: f.name ?? "fuzz",
    model: {
      architecture: f.architecture ?? Architecture.LITE,
      inputSize: { width: f.width ?? 48, height: f.height ?? 64 },
      extra: { case: "lite" as const, value: { channels: f.channels ?? [8, 16, 32] } },
    },
    data: {
      kind: f.dataKind ?? DatasetKind.SYNTHETIC,
      synthetic: { trainImages: f.trainImages ?? 40, valImages: f.valImages ?? 8, imageWidth: f.imageWidth ?? 128, imageHeight: f.imageHeight ?? 96, maxPeople: f.maxPeople ?? 2, seed: 5n },
      name: "tiny",
    },
    optimizer: { kind: f.optimizer ?? OptimizerKind.ADAM, lr: f.lr ?? 1e-3 },
    schedule: { kind: f.schedule ?? ScheduleKind.MULTISTEP, lrSteps: f.lrSteps ?? [1], lrFactor: f.lrFactor ?? 0.5 },
    batchSize: f.batchSize ?? 8,
    beginEpoch: f.beginEpoch ?? 0,
    endEpoch: f.endEpoch ?? 2,
    seed: f.seed ?? 3n,
    publish: { mode: f.publishMode ?? PublishMode.BEST, modelName: f.modelName ?? TRAIN_MODEL },
    quantization: { enabled: true, calibrationSamples: f.calibrationSamples ?? 16, maxApDrop: f.maxApDrop ?? 100 },
    validation: { useGtBoxes: true },
  }));

const stringMap = (keys: fc.Arbitrary<string>) => fc.dictionary(keys, fc.oneof(weirdScalar.map((value) => String(value)), oddString), { maxKeys: 6 });
const requestExtras = fc.record({
  overrides: fc.oneof({ weight: 2, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: stringMap(fc.oneof(fc.constantFrom(...OVERRIDE_KEYS), oddString)) }),
  labels: fc.oneof({ weight: 2, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: stringMap(oddString) }),
  idempotencyKey: maybe(oddString),
});
function startTrainingRequest(source: fc.Arbitrary<NonNullable<StartTrainingInit["source"]>>): fc.Arbitrary<StartTrainingInit> {
  return fc
    .record({ source, extras: requestExtras })
    .map(({ source, extras: { idempotencyKey, ...extras } }): StartTrainingInit => ({ source, ...extras, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) }));
}
const yamlRequest = startTrainingRequest(yamlTexts.map((value) => ({ case: "experimentYaml" as const, value })));
const configRequest = startTrainingRequest(
  fc.oneof({ weight: 9, arbitrary: configObject.map((value) => ({ case: "config" as const, value })) }, { weight: 1, arbitrary: fc.constant({ case: undefined }) }),
);

async function startTrainingProblem(request: StartTrainingInit): Promise<string | undefined> {
  let code: number = Code.OK;
  let message = "";
  try {
    await training.startTraining(request, { timeoutMs: CALL_DEADLINE_MS });
  } catch (error) {
    const appError = AppError.from(error);
    code = appError.code;
    message = appError.message;
  }
  if (code === Code.DEADLINE_EXCEEDED) return `hang: no reply within ${CALL_DEADLINE_MS} ms`;
  if (!CLEAR_TRAINING_CODES.has(code)) return `${codeName(code)}: ${message}`;
  const leaked = internalText(message);
  if (leaked !== undefined) return `${codeName(code)} leaks "${leaked}": ${message}`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------

/** A well-formed stream: every frame answered OK with a person from the served model. */
async function wellFormedStream(frames: number): Promise<void> {
  const requests: StreamRequest[] = [{ payload: { case: "options", value: { modelName: MODEL, delivery: DeliveryMode.EVERY_FRAME } } }];
  for (let i = 1; i <= frames; i++) requests.push({ payload: { case: "frame", value: { frameId: BigInt(i), image: { case: "encoded", value: { data: validPng, format: ImageFormat.PNG } } } } });
  const results = [];
  for await (const response of inference.streamKeypoints(sent(requests), { timeoutMs: CALL_DEADLINE_MS })) {
    if (response.payload.case === "result") results.push(response.payload.value);
  }
  expect(results.map((result) => Number(result.frameId))).toEqual(Array.from({ length: frames }, (_, i) => i + 1));
  for (const result of results) {
    expect(result.status?.code ?? Code.OK).toBe(Code.OK);
    expect(result.model?.name).toBe(MODEL);
    expect(result.persons).toHaveLength(1);
    expect(result.persons[0]?.keypoints).toHaveLength(17);
  }
}

beforeAll(async () => {
  [nats, dir] = await Promise.all([NatsServer.start(), makeTempDir("poseloop-fuzz-")]);
  const [model, png, jpegs] = await Promise.all([buildTestModel({ seed: 3, int8: false }), plainPng(64, 48), syntheticJpegs(1, 64, 48)]);
  validPng = png;
  validJpeg = jpegs[0] ?? new Uint8Array();
  const bus = await NatsBus.connect({ servers: nats.url, name: `fuzz-publisher-${process.pid}`, reconnectTimeWaitMs: 100 });
  try {
    await publishTestModel(await ModelRegistry.open(bus), MODEL, model);
  } finally {
    await bus.close();
  }
  const common = { POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "info", POSELOOP_DRAIN_TIMEOUT: "2s" };
  [trainer, inferencer] = await Promise.all([
    spawnService(
      TRAINER,
      { ...common, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_MAX_CONCURRENT_JOBS: "0", POSELOOP_WORK_DIR: join(dir.path, "work"), POSELOOP_DATA_ROOT: join(dir.path, "data") },
      90_000,
    ),
    spawnService(INFERENCER, { ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: MODEL }, 90_000),
  ]);
  inference = createClient(InferenceService, `127.0.0.1:${inferencer.port}`, { defaultTimeoutMs: CALL_DEADLINE_MS });
  training = createClient(TrainerService, `127.0.0.1:${trainer.port}`, { defaultTimeoutMs: CALL_DEADLINE_MS });
  await waitFor(async () => (await healthOf(inferencer)) === HealthCheckResponse_ServingStatus.SERVING, { timeoutMs: 60_000, intervalMs: 200, what: `${MODEL} serving` });
  // Warm-up: the first frames size onnxruntime's arenas and the first jobs V8's heap; growth counts from here.
  await wellFormedStream(8);
  for (let i = 0; i < YAML_CONCURRENCY; i++) await training.startTraining({ source: { case: "experimentYaml", value: tinyExperiment(TRAIN_MODEL, "warm-up") } });
  warmRss.trainer = await rssBytes(trainer);
  warmRss.inferencer = await rssBytes(inferencer);
}, 180_000);

afterAll(async () => {
  inference?.$close();
  training?.$close();
  await Promise.all([trainer?.stop("SIGKILL"), inferencer?.stop("SIGKILL")]);
  await nats?.dispose();
  await dir?.remove();
});

describe("fuzz: the real services under generated hostile input (issue 23)", () => {
  it("StreamKeypoints: every stream ends with results for its frames or a clean status", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(streamRecipe, { minLength: CONCURRENCY, maxLength: CONCURRENCY }), async (recipes) => {
        const problems = await Promise.all(
          recipes.map(async (recipe) => {
            const { requests, frameIds } = toRequests(recipe);
            generated.streams += 1;
            generated.streamRequests += requests.length;
            const outcome = await within(runStream(requests), CALL_DEADLINE_MS + 5_000, "a StreamKeypoints call");
            const name = codeName(outcome.code);
            generated.streamStatuses.set(name, (generated.streamStatuses.get(name) ?? 0) + 1);
            return streamProblem(outcome, frameIds);
          }),
        );
        const found = problems.filter((problem) => problem !== undefined);
        expect(found, found.join("\n")).toEqual([]);
      }),
      { seed: SEED, numRuns: STREAM_BATCHES, endOnFailure: false },
    );
  }, 240_000);

  it.each([
    { source: "experiment YAML texts", requests: yamlRequest, concurrency: YAML_CONCURRENCY, batches: YAML_BATCHES },
    { source: "config objects", requests: configRequest, concurrency: CONCURRENCY, batches: CONFIG_BATCHES },
  ])("StartTraining with $source: every request is accepted or refused with a clear code", async ({ requests, concurrency, batches }) => {
    await fc.assert(
      fc.asyncProperty(fc.array(requests, { minLength: concurrency, maxLength: concurrency }), async (batch) => {
        generated.startTraining += batch.length;
        const problems = await Promise.all(batch.map((request) => within(startTrainingProblem(request), CALL_DEADLINE_MS + 5_000, "a StartTraining call")));
        const found = problems.filter((problem) => problem !== undefined);
        expect(found, found.join("\n")).toEqual([]);
      }),
      { seed: SEED, numRuns: batches },
    );
  }, 240_000);

  it("afterwards: both processes answer, a well-formed stream still works, and memory stayed bounded", async () => {
    const total = generated.streamRequests + generated.startTraining;
    console.info(`fuzz: ${generated.streams} streams, ${generated.streamRequests} stream requests, ${generated.startTraining} StartTraining calls, ${total} in all`);
    console.info(`fuzz: ${generated.framesAnsweredOk} frames answered OK; streams ended with`, Object.fromEntries(generated.streamStatuses));
    expect(total).toBeGreaterThanOrEqual(5_000);
    // The fuzz reached onnxruntime, not only the request checks in front of it.
    expect(generated.framesAnsweredOk).toBeGreaterThan(100);
    expect(trainer?.child.exitCode).toBeNull();
    expect(inferencer?.child.exitCode).toBeNull();
    const answered = [HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING];
    expect(answered).toContain(await healthOf(trainer));
    expect(answered).toContain(await healthOf(inferencer));
    await wellFormedStream(4);
    const growth = { trainer: (await rssBytes(trainer)) - warmRss.trainer, inferencer: (await rssBytes(inferencer)) - warmRss.inferencer };
    console.info(`fuzz: RSS growth over warm-up: trainer ${(growth.trainer / 2 ** 20).toFixed(1)} MiB, inferencer ${(growth.inferencer / 2 ** 20).toFixed(1)} MiB`);
    expect(growth.trainer).toBeLessThan(RSS_GROWTH_BOUND_BYTES);
    expect(growth.inferencer).toBeLessThan(RSS_GROWTH_BOUND_BYTES);
  }, 60_000);
});
