import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { ModelRegistry, NatsBus, type Bus, type JobQueue } from "@poseloop/bus";
import { AppError, Code, silentLogger } from "@poseloop/core";
import { createClient, GrpcServer } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointList } from "./jobs/checkpoint-list.js";
import { JobStore } from "./jobs/job-store.js";
import type { TrainerClient } from "./testing/harness.js";
import { trainerService } from "./trainer-service.js";

// What a client can send StartTraining, hostile or unlucky, against the service on a real gRPC server and a
// real nats-server: nothing it sends stops the service, and a job is queued exactly once or not at all.

const nats = await NatsServer.start();
afterAll(async () => nats.dispose());

const DEMO = fileURLToPath(new URL("../../../experiments/synthetic/lite_128x96_demo.yaml", import.meta.url));

/** A queue whose next enqueue fails, before or after the message went out. */
class FlakyQueue implements JobQueue {
  failNext: "before" | "after" | undefined;
  constructor(readonly inner: JobQueue) {}
  get ackWaitMs() {
    return this.inner.ackWaitMs;
  }
  get maxDeliveries() {
    return this.inner.maxDeliveries;
  }
  async enqueue(job: Parameters<JobQueue["enqueue"]>[0]): Promise<void> {
    const fail = this.failNext;
    this.failNext = undefined;
    if (fail === "before") throw new AppError(Code.UNAVAILABLE, "queue unavailable");
    await this.inner.enqueue(job);
    if (fail === "after") throw new AppError(Code.UNAVAILABLE, "connection lost before the ack");
  }
  next(options: { waitMs: number; signal?: AbortSignal }) {
    return this.inner.next(options);
  }
}

let dir: { path: string; remove: () => Promise<void> };
let bus: Bus;
let queue: FlakyQueue;
let server: GrpcServer;
let client: TrainerClient;
let demo: string;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-submissions-");
  bus = await NatsBus.connect({ servers: nats.url, name: "submissions" });
  const store = await JobStore.open(bus);
  queue = new FlakyQueue(await bus.jobQueue("poseloop-submissions-test", { ackWaitMs: 5000 }));
  const impl = trainerService({
    store,
    queue,
    checkpointList: await CheckpointList.open(bus),
    registry: await ModelRegistry.open(bus, silentLogger),
    dataRoot: dir.path,
    authToken: "",
    logger: silentLogger,
    publishCheckpoint: () => Promise.reject(new AppError(Code.UNIMPLEMENTED, "not in this test")),
  });
  server = new GrpcServer({ logger: silentLogger });
  server.register(TrainerService, impl);
  const { port } = await server.listen("127.0.0.1", 0);
  client = createClient(TrainerService, `127.0.0.1:${port}`, { defaultTimeoutMs: 20_000 });
  demo = await readFile(DEMO, "utf8");
});

afterAll(async () => {
  client?.$close();
  server?.forceShutdown();
  await bus?.close();
  await dir?.remove();
});

const startYaml = (yaml: string, extra: { overrides?: Record<string, string>; labels?: Record<string, string>; idempotencyKey?: string } = {}) =>
  client.startTraining({ source: { case: "experimentYaml", value: yaml }, ...extra });
const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as AppError);

/** The queued job ids, taking (and acking) every message now in the queue. */
async function drainQueue(): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const delivery = await queue.next({ waitMs: 500 });
    if (delivery === undefined) return ids;
    ids.push((JSON.parse(new TextDecoder().decode(delivery.data)) as { jobId: string }).jobId);
    await delivery.ack();
  }
}

describe("StartTraining with an experiment file", () => {
  it("answers a file with thousands of problems: the first 100 and how many more", async () => {
    const unknown = Array.from({ length: 2500 }, (_, i) => `UNKNOWN_KEY_${i}: ${i}`).join("\n");
    const error = await failure(startYaml(`${demo}\n${unknown}\n`));
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect(error?.problems).toHaveLength(101);
    expect(error?.problems[0]).toMatch(/^UNKNOWN_KEY_0: unknown key/);
    expect(error?.problems.at(-1)).toBe("and 2400 more");
    expect(error?.message).toMatch(/^invalid training config \(2500 problems\): UNKNOWN_KEY_0/);
  });

  it("refuses a file over 256 KiB at once, naming the limit", async () => {
    const big = `${demo}\nCUDNN:\n${Array.from({ length: 100_000 }, (_, i) => `  K${i}: ${i}`).join("\n")}\n`;
    const started = performance.now();
    const error = await failure(startYaml(big));
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect(error?.problems).toEqual([`the experiment file is ${Buffer.byteLength(big)} bytes; the limit is 262144 bytes (256 KiB)`]);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it("refuses an alias bomb as INVALID_ARGUMENT naming the alias limit", async () => {
    const names = "abcdefghi";
    const levels = [`  a: &a [${Array.from({ length: 9 }, () => '"lol"').join(", ")}]`];
    for (let i = 1; i < 9; i++) levels.push(`  ${names[i]}: &${names[i]} [${Array.from({ length: 9 }, () => `*${names[i - 1]}`).join(", ")}]`);
    const error = await failure(startYaml(`${demo}\nCUDNN:\n${levels.join("\n")}\n`));
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect(error?.problems).toEqual(["YAML: aliases expand past the limit of 100 alias expansions (maxAliasCount)"]);
  });

  it("keeps the service's event loop turning while a large file is checked", async () => {
    // Just under the size limit, in one mapping: YAML's duplicate-key checks make this the slow case.
    const keys: string[] = [];
    for (let i = 0, size = demo.length + 8; size < 250 * 1024; i++) {
      keys.push(`  K${i}: ${i}`);
      size += keys.at(-1)!.length + 1;
    }
    let last = performance.now();
    let longest = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 10);
    let error: AppError | undefined;
    try {
      // END_EPOCH 0 gets the job refused (nothing is queued) once the whole file has been read.
      error = await failure(startYaml(`${demo}\nCUDNN:\n${keys.join("\n")}\n`, { overrides: { "TRAIN.END_EPOCH": "0" } }));
    } finally {
      clearInterval(ticker);
    }
    expect(error?.problems).toEqual(["TRAIN.END_EPOCH (end_epoch) must be greater than TRAIN.BEGIN_EPOCH (begin_epoch) 0, got 0"]);
    expect(longest).toBeLessThan(250);
  });
});

describe("StartTraining's references", () => {
  it("refuses INIT_FROM and DISTILL references that are not ids or versions, naming each", async () => {
    const error = await failure(
      startYaml(demo, { overrides: { "INIT_FROM.JOB_ID": "../../etc", "INIT_FROM.CHECKPOINT_ID": "e0001-s0000001", "DISTILL.TEACHER_MODEL": "demo", "DISTILL.TEACHER_VERSION": "../x", "DISTILL.WEIGHT": "1" } }),
    );
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect(error?.problems).toEqual([
      "DISTILL.TEACHER_VERSION (distillation.teacher.version): \"../x\" is not a model version (1-128 letters, digits, '.', '-' or '_')",
      'INIT_FROM.JOB_ID (init_from.checkpoint.job_id): "../../etc" is not a job id (job-YYYYMMDD-HHMMSS-xxxxxx)',
    ]);
  });

  it("refuses a checkpoint, model version or teacher that does not exist as NOT_FOUND, listing each", async () => {
    const checkpoint = await failure(startYaml(demo, { overrides: { "INIT_FROM.JOB_ID": "job-20200101-000000-000000", "INIT_FROM.CHECKPOINT_ID": "e0001-s0000001" } }));
    expect(AppError.is(checkpoint, Code.NOT_FOUND)).toBe(true);
    expect(checkpoint?.problems).toEqual(["INIT_FROM.JOB_ID: no job job-20200101-000000-000000"]);
    const models = await failure(startYaml(demo, { overrides: { "INIT_FROM.MODEL": "nobody", "INIT_FROM.VERSION": "20200101-000000-000000", "DISTILL.TEACHER_MODEL": "teacher", "DISTILL.WEIGHT": "1" } }));
    expect(AppError.is(models, Code.NOT_FOUND)).toBe(true);
    expect(models?.problems).toEqual(["INIT_FROM.VERSION: model nobody has no version 20200101-000000-000000", "DISTILL.TEACHER_MODEL: model teacher has no serving version"]);
    expect(await drainQueue()).toEqual([]);
  });
});

describe("StartTraining's limits", () => {
  it("refuses labels that would overwrite a published model's provenance", async () => {
    const error = await failure(startYaml(demo, { labels: { checkpoint: "e9999-forged" } }));
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect(error?.problems).toEqual(['labels: "checkpoint" is set by the trainer itself (the provenance of a published model), not by a client']);
  });

  it("refuses sizes without bounds, naming each key", async () => {
    const error = await failure(
      startYaml(demo, {
        overrides: { "MODEL.IMAGE_SIZE": "[100000, 100000]", "MODEL.HEATMAP_SIZE": "[25000, 25000]", "TRAIN.BATCH_SIZE_PER_GPU": "100000", "TRAIN.END_EPOCH": "100000000", WORKERS: "5000" },
      }),
    );
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = error?.problems.join("\n") ?? "";
    expect(problems).toContain("MODEL.IMAGE_SIZE (model.input_size) must be at most 2048 pixels each, got [100000, 100000]");
    expect(problems).toContain("TRAIN.BATCH_SIZE_PER_GPU (batch_size) must be at most 1024, got 100000");
    expect(problems).toContain("TRAIN.END_EPOCH (end_epoch) must be at most 10000, got 100000000");
    expect(problems).toContain("WORKERS (loader_workers) must be at most 64, got 5000");
  });
});

describe("StartTraining is all or nothing", () => {
  it("queues the job on a retry with the same key when the queue failed the first time", async () => {
    queue.failNext = "before";
    const first = await failure(startYaml(demo, { idempotencyKey: "queue-down-once" }));
    expect(AppError.is(first, Code.UNAVAILABLE)).toBe(true);
    const retry = await startYaml(demo, { idempotencyKey: "queue-down-once" });
    expect(await drainQueue()).toEqual([retry.job?.jobId]);
  });

  it("queues the job once when the first answer was lost after the message went out", async () => {
    queue.failNext = "after";
    const first = await failure(startYaml(demo, { idempotencyKey: "ack-lost" }));
    expect(AppError.is(first, Code.UNAVAILABLE)).toBe(true);
    const retry = await startYaml(demo, { idempotencyKey: "ack-lost" });
    const again = await startYaml(demo, { idempotencyKey: "ack-lost" });
    expect(again.job?.jobId).toBe(retry.job?.jobId);
    expect(await drainQueue()).toEqual([retry.job?.jobId]);
  });
});
