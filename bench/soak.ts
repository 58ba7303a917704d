/**
 * Soak: the inferencer as its own process on a real nats-server, for 10 minutes (POSELOOP_SOAK_MINUTES; 1 with
 * POSELOOP_BENCH_QUICK=1), under 8 EVERY_FRAME streams paced at 30 fps, a new int8 version published every 30 s
 * (15 s quick) and a stream of 4K PNGs that is on for every other period. Peers measured in the same run:
 * frames sent against answered, p99 around swaps against the steady p99, the well-behaved streams' p99 with
 * the heavy stream on against off, and the inferencer's RSS at the end against the start. Missed goals are
 * reported, never thrown.
 */
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { readFile } from "node:fs/promises";
import { ModelRegistry, NatsBus } from "@poseloop/bus";
import { AppError, sleep, withDeadline } from "@poseloop/core";
import { createClient } from "@poseloop/grpc";
import { DeliveryMode, InferenceService, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { buildTestModel, jpegFrame, plainPng, pngFrame, publishTestModel, streamRequests, syntheticJpegs, type InferenceClient, type TestModel } from "@poseloop/inferencer/testing";
import { NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { fmt, printTable } from "./harness.js";

const QUICK = process.env["POSELOOP_BENCH_QUICK"] === "1";
const MODEL = "soak";
const INFERENCER = fileURLToPath(new URL("../services/inferencer/src/main.ts", import.meta.url));
const WORKERS = 2;

const LIGHT_STREAMS = 8;
const LIGHT_FPS = 30;
const LIGHT_SIZE = [256, 192] as const;
/** The heavy stream: 4K PNGs (the default pixel limit), ~95 ms each to decode on one core, at 5 fps. */
const HEAVY_SIZE = [3840, 2160] as const;
const HEAVY_FPS = 5;
const HEAVY_IN_FLIGHT = 4;

/** Publication interval; the heavy stream is off for one period and on for the next, so both are measured. */
const PERIOD_MS = QUICK ? 15_000 : 30_000;
/** A swap lasts from its publication to this long after the first frame answered by the new version. */
const SWAP_TAIL_MS = 2_000;
/** Frames this soon after the heavy stream's last answer count as neither with nor without it. */
const HEAVY_SETTLE_MS = 1_000;
const RSS_EVERY_MS = QUICK ? 1_000 : 5_000;
/** One period, with the heavy stream on for its first half and a swap, before RSS is first sampled. */
const WARM_UP_MS = PERIOD_MS;

interface Schedule {
  readonly durationMs: number;
  /** [start, end) in ms from the phase's start. */
  readonly heavyWindows: readonly (readonly [number, number])[];
  readonly publications: readonly number[];
}

/** Times are ms from the phase's start; NaN until it happens. */
interface LightRecord {
  readonly name: string;
  readonly sentAt: Float64Array;
  readonly answeredAt: Float64Array;
  errors: number;
  dropped: number;
  failure: string | undefined;
}

interface HeavyRecord {
  readonly window: readonly [number, number];
  /** First send, last answer. */
  start: number;
  end: number;
  sent: number;
  answered: number;
  errors: number;
  dropped: number;
  readonly latencies: number[];
  failure: string | undefined;
}

interface SwapRecord {
  readonly publishedAt: number;
  publishDone: number;
  version: string;
  /** The first answer from the new version. */
  switchedAt: number;
  failure: string | undefined;
}

interface PhaseRecord {
  readonly light: LightRecord[];
  readonly heavy: HeavyRecord[];
  readonly swaps: SwapRecord[];
  readonly rss: { t: number; bytes: number }[];
}

function soakMinutes(): number {
  const raw = process.env["POSELOOP_SOAK_MINUTES"];
  const fallback = QUICK ? 1 : 10;
  if (raw === undefined || raw === "") return fallback;
  const minutes = Number(raw);
  if (Number.isFinite(minutes) && minutes > 0) return minutes;
  process.stderr.write(`soak: ignoring POSELOOP_SOAK_MINUTES=${raw}: not a positive number of minutes; running ${fallback}\n`);
  return fallback;
}

function mainSchedule(durationMs: number): Schedule {
  const heavyWindows: [number, number][] = [];
  for (let start = PERIOD_MS; start < durationMs; start += 2 * PERIOD_MS) heavyWindows.push([start, Math.min(start + PERIOD_MS, durationMs)]);
  const publications: number[] = [];
  // Mid-period, so half the swaps fall in heavy-off periods and half in heavy-on ones.
  for (let at = PERIOD_MS / 2; at < durationMs; at += PERIOD_MS) publications.push(at);
  return { durationMs, heavyWindows, publications };
}

/** Nearest-rank percentile; NaN for no values. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

async function rssBytes(pid: number): Promise<number | undefined> {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    // The process is gone: the streams report why.
    return undefined;
  }
}

/** Alternates two artifacts so every publication is a real swap to other weights. */
class AlternatingPublisher {
  readonly #registry: ModelRegistry;
  readonly #models: readonly [TestModel, TestModel];
  #next = 0;

  constructor(registry: ModelRegistry, models: readonly [TestModel, TestModel]) {
    this.#registry = registry;
    this.#models = models;
  }

  async publish(): Promise<string> {
    const model = this.#models[this.#next % 2] as TestModel;
    this.#next++;
    const published = await withDeadline(publishTestModel(this.#registry, MODEL, model), 60_000, "a model publication");
    return published.manifest.model?.version ?? "";
  }
}

class Clock {
  readonly #t0 = performance.now();
  now(): number {
    return performance.now() - this.#t0;
  }
  async until(t: number): Promise<void> {
    const wait = t - this.now();
    if (wait > 0) await sleep(wait);
  }
}

/** First answer time of every model version seen in results. */
type VersionsSeen = Map<string, number>;

function lightRecord(index: number, durationMs: number): LightRecord {
  const count = Math.round((durationMs / 1000) * LIGHT_FPS);
  return { name: `cam-${index}`, sentAt: new Float64Array(count).fill(Number.NaN), answeredAt: new Float64Array(count).fill(Number.NaN), errors: 0, dropped: 0, failure: undefined };
}

/** Fills `record` as frames go out and answers come back. */
async function lightStream(client: InferenceClient, index: number, record: LightRecord, jpegs: readonly Uint8Array[], clock: Clock, seen: VersionsSeen): Promise<void> {
  const count = record.sentAt.length;
  async function* frames(): AsyncGenerator<Frame> {
    for (let i = 0; i < count; i++) {
      // A camera: frame i is captured at i/30 s whatever happened to frame i-1. Behind schedule, frames go
      // out at once and are answered late, which the latency from capture shows.
      await clock.until((i * 1000) / LIGHT_FPS);
      record.sentAt[i] = clock.now();
      yield jpegFrame(i, jpegs[(i + index * 5) % jpegs.length] as Uint8Array);
    }
  }
  try {
    const requests = streamRequests({ delivery: DeliveryMode.EVERY_FRAME, streamName: record.name }, frames());
    for await (const response of client.streamKeypoints(requests, { timeoutMs: (count * 1000) / LIGHT_FPS + 120_000 })) {
      if (response.payload.case === "dropped") record.dropped += response.payload.value.frameIds.length;
      if (response.payload.case !== "result") continue;
      const result = response.payload.value;
      const now = clock.now();
      record.answeredAt[Number(result.frameId)] = now;
      if ((result.status?.code ?? 0) !== 0) record.errors++;
      const version = result.model?.version;
      if (version !== undefined && !seen.has(version)) seen.set(version, now);
    }
  } catch (error) {
    record.failure = AppError.from(error).message;
  }
}

async function heavyStream(client: InferenceClient, png: Uint8Array, clock: Clock, window: readonly [number, number]): Promise<HeavyRecord> {
  const record: HeavyRecord = { window, start: Number.NaN, end: Number.NaN, sent: 0, answered: 0, errors: 0, dropped: 0, latencies: [], failure: undefined };
  const sentAt: number[] = [];
  await clock.until(window[0]);
  async function* frames(): AsyncGenerator<Frame> {
    for (let i = 0; ; i++) {
      const due = window[0] + (i * 1000) / HEAVY_FPS;
      if (due >= window[1]) return;
      await clock.until(due);
      sentAt.push(clock.now());
      if (i === 0) record.start = clock.now();
      record.sent++;
      yield pngFrame(i, png);
    }
  }
  try {
    const requests = streamRequests({ delivery: DeliveryMode.EVERY_FRAME, maxInFlight: HEAVY_IN_FLIGHT, streamName: "heavy-4k" }, frames());
    for await (const response of client.streamKeypoints(requests, { timeoutMs: window[1] - window[0] + 120_000 })) {
      if (response.payload.case === "dropped") record.dropped += response.payload.value.frameIds.length;
      if (response.payload.case !== "result") continue;
      const result = response.payload.value;
      record.end = clock.now();
      record.answered++;
      record.latencies.push(record.end - (sentAt[Number(result.frameId)] ?? Number.NaN));
      if ((result.status?.code ?? 0) !== 0) record.errors++;
    }
  } catch (error) {
    record.failure = AppError.from(error).message;
  }
  if (Number.isNaN(record.end)) record.end = window[1];
  return record;
}

async function publications(publisher: AlternatingPublisher, clock: Clock, times: readonly number[]): Promise<SwapRecord[]> {
  const swaps: SwapRecord[] = [];
  for (const at of times) {
    await clock.until(at);
    const swap: SwapRecord = { publishedAt: clock.now(), publishDone: Number.NaN, version: "", switchedAt: Number.NaN, failure: undefined };
    swaps.push(swap);
    try {
      swap.version = await publisher.publish();
    } catch (error) {
      swap.failure = AppError.from(error).message;
    }
    swap.publishDone = clock.now();
  }
  return swaps;
}

/** Runs one phase: light streams, heavy windows and publications on `schedule`, RSS sampled until the end. */
async function runPhase(
  clients: { light: readonly InferenceClient[]; heavy: InferenceClient },
  data: { jpegs: readonly Uint8Array[]; png: Uint8Array },
  publisher: AlternatingPublisher,
  inferencer: ServiceProcess,
  schedule: Schedule,
  progress?: (clock: Clock, light: readonly LightRecord[]) => string,
): Promise<PhaseRecord> {
  const clock = new Clock();
  const seen: VersionsSeen = new Map();
  const rss: { t: number; bytes: number }[] = [];
  const light = clients.light.map((_, i) => lightRecord(i, schedule.durationMs));
  let running = true;
  const sampler = (async () => {
    for (let k = 0; running; k++) {
      const bytes = await rssBytes(inferencer.child.pid ?? 0);
      if (bytes !== undefined && clock.now() <= schedule.durationMs) rss.push({ t: clock.now(), bytes });
      if (progress !== undefined && k > 0 && k % Math.round((2 * PERIOD_MS) / RSS_EVERY_MS) === 0) process.stdout.write(`${progress(clock, light)}, RSS ${fmt((bytes ?? 0) / 2 ** 20, 0)} MiB\n`);
      await clock.until((k + 1) * RSS_EVERY_MS);
    }
  })();
  const lightRuns = clients.light.map((client, i) => lightStream(client, i, light[i] as LightRecord, data.jpegs, clock, seen));
  const heavyRuns = (async () => {
    const heavy: HeavyRecord[] = [];
    for (const window of schedule.heavyWindows) heavy.push(await heavyStream(clients.heavy, data.png, clock, window));
    return heavy;
  })();
  const [, heavy, swaps] = await Promise.all([Promise.all(lightRuns), heavyRuns, publications(publisher, clock, schedule.publications)]);
  running = false;
  await sampler;
  for (const swap of swaps) swap.switchedAt = seen.get(swap.version) ?? Number.NaN;
  return { light, heavy, swaps, rss };
}

function swapWindows(swaps: readonly SwapRecord[]): [number, number][] {
  return swaps.map((s) => [s.publishedAt, (Number.isNaN(s.switchedAt) ? s.publishDone : s.switchedAt) + SWAP_TAIL_MS]);
}

function overlaps(a0: number, a1: number, windows: readonly (readonly [number, number])[]): boolean {
  return windows.some(([b0, b1]) => a0 <= b1 && b0 <= a1);
}

/** Latencies from capture to answer of the light streams' frames, split by swap and by the heavy stream. */
function classify(phase: PhaseRecord): Record<"steadyOff" | "swapOff" | "steadyOn" | "swapOn", number[]> {
  const swaps = swapWindows(phase.swaps);
  const heavyActive = phase.heavy.map((h): [number, number] => [Number.isNaN(h.start) ? h.window[0] : h.start, h.end]);
  const heavyShadow = heavyActive.map(([s, e]): [number, number] => [s, e + HEAVY_SETTLE_MS]);
  const out = { steadyOff: [] as number[], swapOff: [] as number[], steadyOn: [] as number[], swapOn: [] as number[] };
  for (const stream of phase.light) {
    for (let i = 0; i < stream.answeredAt.length; i++) {
      const captured = (i * 1000) / LIGHT_FPS;
      const answered = stream.answeredAt[i] as number;
      if (Number.isNaN(answered)) continue;
      const inSwap = overlaps(captured, answered, swaps);
      const on = heavyActive.some(([s, e]) => captured >= s && captured <= e);
      const off = !overlaps(captured, answered, heavyShadow);
      const latency = answered - captured;
      if (on) (inSwap ? out.swapOn : out.steadyOn).push(latency);
      else if (off) (inSwap ? out.swapOff : out.steadyOff).push(latency);
    }
  }
  return out;
}

function countRecorded(values: Float64Array): number {
  let n = 0;
  for (const v of values) if (!Number.isNaN(v)) n++;
  return n;
}

function report(phase: PhaseRecord, durationMs: number, inferencer: ServiceProcess): void {
  const rows: string[][] = [];
  let sentTotal = 0;
  let answeredTotal = 0;
  let failures = 0;
  let lastLightAnswer = 0;
  for (const s of phase.light) {
    const sent = countRecorded(s.sentAt);
    const answered = countRecorded(s.answeredAt);
    const lags = Array.from(s.sentAt, (t, i) => t - (i * 1000) / LIGHT_FPS).filter((lag) => !Number.isNaN(lag));
    const lastAnswer = Math.max(...Array.from(s.answeredAt).filter((t) => !Number.isNaN(t)), 0);
    lastLightAnswer = Math.max(lastLightAnswer, lastAnswer);
    sentTotal += sent;
    answeredTotal += answered;
    if (s.failure !== undefined) failures++;
    rows.push([s.name, String(s.answeredAt.length), String(sent), String(answered), String(s.errors), String(s.dropped), fmt(answered / (lastAnswer / 1000), 1), fmt(percentile(lags, 99), 1), fmt(Math.max(...lags, 0), 1), s.failure ?? ""]);
  }
  const heavySent = phase.heavy.reduce((n, h) => n + h.sent, 0);
  const heavyAnswered = phase.heavy.reduce((n, h) => n + h.answered, 0);
  const heavyOnMs = phase.heavy.reduce((n, h) => n + (h.window[1] - h.window[0]), 0);
  const heavyFailure = phase.heavy.find((h) => h.failure !== undefined)?.failure;
  if (heavyFailure !== undefined) failures++;
  rows.push(["light total", String(phase.light.reduce((n, s) => n + s.answeredAt.length, 0)), String(sentTotal), String(answeredTotal), String(phase.light.reduce((n, s) => n + s.errors, 0)), String(phase.light.reduce((n, s) => n + s.dropped, 0)), fmt(answeredTotal / (lastLightAnswer / 1000), 1), "", "", ""]);
  rows.push([`heavy ${HEAVY_SIZE[0]}x${HEAVY_SIZE[1]} PNG`, String(Math.round((heavyOnMs / 1000) * HEAVY_FPS)), String(heavySent), String(heavyAnswered), String(phase.heavy.reduce((n, h) => n + h.errors, 0)), String(phase.heavy.reduce((n, h) => n + h.dropped, 0)), fmt(heavyAnswered / (heavyOnMs / 1000), 1), "", "", heavyFailure ?? ""]);
  printTable(
    `frames: scheduled, sent, answered (EVERY_FRAME: every frame sent must be answered); light streams at ${LIGHT_FPS} fps, heavy at ${HEAVY_FPS} fps while on`,
    ["stream", "scheduled", "sent", "answered", "errors", "dropped", "answered/s", "p99 send lag ms", "max send lag ms", "failure"],
    rows,
  );

  const split = classify(phase);
  const swapRow = (label: string, steady: number[], swap: number[]): string[] => [
    label, String(steady.length), fmt(percentile(steady, 50)), fmt(percentile(steady, 99)), String(swap.length), fmt(percentile(swap, 50)), fmt(percentile(swap, 99)), fmt(percentile(swap, 99) / percentile(steady, 99)),
  ];
  printTable(
    `light-stream latency, capture to answer, ms: during swaps (publication to ${SWAP_TAIL_MS / 1000} s after the first answer of the new version) vs steady`,
    ["heavy stream", "steady frames", "steady p50", "steady p99", "swap frames", "swap p50", "swap p99", "p99 swap/steady"],
    [swapRow("off", split.steadyOff, split.swapOff), swapRow("on", split.steadyOn, split.swapOn)],
  );
  const withHeavy = split.steadyOn;
  const without = split.steadyOff;
  const heavyLatencies = phase.heavy.flatMap((h) => h.latencies);
  printTable(
    "light-stream latency outside swaps, ms: with the heavy stream on vs off (the heavy stream's own latency for reference)",
    ["case", "frames", "p50", "p99", "max", "p99 ratio"],
    [
      ["heavy off", String(without.length), fmt(percentile(without, 50)), fmt(percentile(without, 99)), fmt(percentile(without, 100)), "1.00"],
      ["heavy on", String(withHeavy.length), fmt(percentile(withHeavy, 50)), fmt(percentile(withHeavy, 99)), fmt(percentile(withHeavy, 100)), fmt(percentile(withHeavy, 99) / percentile(without, 99))],
      ["(heavy frames)", String(heavyLatencies.length), fmt(percentile(heavyLatencies, 50)), fmt(percentile(heavyLatencies, 99)), fmt(percentile(heavyLatencies, 100)), ""],
    ],
  );

  const published = phase.swaps.filter((s) => s.failure === undefined);
  const switched = published.filter((s) => !Number.isNaN(s.switchedAt));
  const switchMs = switched.map((s) => s.switchedAt - s.publishedAt);
  printTable("swaps", ["published", "failed to publish", "served (answers from the new version)", "publish→first answer p50 ms", "max ms"], [
    [String(published.length), String(phase.swaps.length - published.length), String(switched.length), fmt(percentile(switchMs, 50), 0), fmt(percentile(switchMs, 100), 0)],
  ]);

  // One heavy cycle (off then on) at each end, so both windows hold the same mix of load.
  const windowMs = Math.min(2 * PERIOD_MS, durationMs / 2);
  const first = phase.rss.filter((s) => s.t < windowMs).map((s) => s.bytes);
  const last = phase.rss.filter((s) => s.t >= durationMs - windowMs).map((s) => s.bytes);
  const drift = (mean(last) - mean(first)) / mean(first);
  const all = phase.rss.map((s) => s.bytes);
  const mib = (b: number): string => fmt(b / 2 ** 20, 1);
  printTable(`inferencer RSS (VmRSS of pid ${inferencer.child.pid ?? "?"}, every ${RSS_EVERY_MS / 1000} s after warm-up; first and last ${windowMs / 1000} s)`, ["samples", "first mean MiB", "last mean MiB", "min MiB", "max MiB", "drift"], [
    [String(all.length), mib(mean(first)), mib(mean(last)), mib(Math.min(...all)), mib(Math.max(...all)), `${fmt(drift * 100, 1)}%`],
  ]);
  // The trend, to tell growth from the swing between heavy-off and heavy-on periods.
  const periods = Array.from({ length: Math.ceil(durationMs / PERIOD_MS) }, (_, k) => {
    const bytes = phase.rss.filter((s) => s.t >= k * PERIOD_MS && s.t < (k + 1) * PERIOD_MS).map((s) => s.bytes);
    return `${fmt(mean(bytes) / 2 ** 20, 0)}${k % 2 === 1 ? "h" : ""}`;
  });
  process.stdout.write(`RSS mean per ${PERIOD_MS / 1000} s period, MiB (h: heavy stream on): ${periods.join(" ")}\n`);

  const pass = (ok: boolean): string => (ok ? "pass" : "FAIL");
  const allSent = sentTotal + heavySent;
  const allAnswered = answeredTotal + heavyAnswered;
  const swapRatio = percentile(split.swapOff, 99) / percentile(split.steadyOff, 99);
  const heavyRatio = percentile(withHeavy, 99) / percentile(without, 99);
  printTable("goals", ["goal", "measured", "target", "result"], [
    ["frames sent = answered", `${allAnswered} of ${allSent}${failures > 0 ? `, ${failures} stream(s) failed` : ""}`, "equal", pass(allSent === allAnswered && failures === 0 && allSent > 0)],
    ["p99 during swaps / steady p99 (heavy off)", fmt(swapRatio), "≤ 1.20", pass(swapRatio <= 1.2)],
    ["light p99 with heavy / without", fmt(heavyRatio), "≤ 2.00", pass(heavyRatio <= 2)],
    ["RSS drift", `${fmt(drift * 100, 1)}%`, "≤ 5%", pass(drift <= 0.05)],
  ]);
  if (inferencer.child.exitCode !== null || inferencer.child.signalCode !== null) {
    process.stdout.write(`the inferencer exited (${inferencer.child.exitCode ?? inferencer.child.signalCode}); last log lines:\n${inferencer.logs.slice(-5).map((l) => JSON.stringify(l)).join("\n")}\n`);
  }
}

export async function run(): Promise<void> {
  const minutes = soakMinutes();
  const durationMs = Math.round(minutes * 60_000);
  const schedule = mainSchedule(durationMs);
  process.stdout.write(
    `\nsoak: ${fmt(minutes, 1)} min, ${LIGHT_STREAMS} streams x ${LIGHT_FPS} fps of ${LIGHT_SIZE[0]}x${LIGHT_SIZE[1]} JPEGs, ${schedule.publications.length} publications every ${PERIOD_MS / 1000} s, ` +
      `a ${HEAVY_SIZE[0]}x${HEAVY_SIZE[1]} PNG stream at ${HEAVY_FPS} fps on every other ${PERIOD_MS / 1000} s; inferencer: ${WORKERS} workers, ${cpus().length} cores here\n`,
  );
  const config = { architecture: "lite" as const, inputWidth: 48, inputHeight: 64, numKeypoints: 17, lite: { channels: [16, 32, 64] as const } };
  const [v1, v2, jpegs, png, nats] = await Promise.all([
    buildTestModel({ seed: 1, config }),
    buildTestModel({ seed: 2, config }),
    syntheticJpegs(24, LIGHT_SIZE[0], LIGHT_SIZE[1]),
    plainPng(HEAVY_SIZE[0], HEAVY_SIZE[1]),
    NatsServer.start(),
  ]);
  let inferencer: ServiceProcess | undefined;
  let bus: NatsBus | undefined;
  const clients: InferenceClient[] = [];
  try {
    inferencer = await spawnService(
      INFERENCER,
      {
        POSELOOP_NATS_URL: nats.url,
        POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
        POSELOOP_MODEL: MODEL,
        POSELOOP_LOG_LEVEL: "info",
        POSELOOP_INFERENCE_WORKERS: String(WORKERS),
        POSELOOP_INTRA_OP_THREADS: "1",
        POSELOOP_MAX_BATCH: "8",
        POSELOOP_DRAIN_TIMEOUT: "2s",
      },
      90_000,
    );
    const port = inferencer.port;
    bus = await NatsBus.connect({ servers: nats.url, name: "soak-publisher", reconnectTimeWaitMs: 100 });
    const publisher = new AlternatingPublisher(await ModelRegistry.open(bus), [v1, v2]);
    for (let i = 0; i <= LIGHT_STREAMS; i++) clients.push(createClient(InferenceService, `127.0.0.1:${port}`, { defaultTimeoutMs: 10_000 }));
    const control = clients[0] as InferenceClient;
    const first = await publisher.publish();
    await waitFor(async () => (await control.getServingModel({})).manifest?.model?.version === first, { timeoutMs: 60_000, intervalMs: 100, what: "the first version serving" });
    const lanes = { light: clients.slice(0, LIGHT_STREAMS), heavy: clients[LIGHT_STREAMS] as InferenceClient };
    const data = { jpegs, png };

    // Warm-up, not measured: every kind of work once (light frames, 4K decodes, a swap), so onnxruntime's
    // arenas and V8's heap have their working size before the first RSS sample.
    const warmUp = await runPhase(lanes, data, publisher, inferencer, { durationMs: WARM_UP_MS, heavyWindows: [[0, WARM_UP_MS / 2]], publications: [WARM_UP_MS / 4] });
    const warmVersion = warmUp.swaps[0]?.version;
    await waitFor(async () => (await control.getServingModel({})).manifest?.model?.version === warmVersion, { timeoutMs: 60_000, intervalMs: 100, what: "the warm-up version serving" });

    const phase = await runPhase(lanes, data, publisher, inferencer, schedule, (clock, light) => {
      const answered = light.reduce((n, s) => n + countRecorded(s.answeredAt), 0);
      const sent = light.reduce((n, s) => n + countRecorded(s.sentAt), 0);
      return `soak: ${fmt(clock.now() / 1000, 0)} s, light frames ${sent} sent, ${answered} answered`;
    });
    report(phase, durationMs, inferencer);
  } finally {
    for (const client of clients) client.$close();
    if (inferencer !== undefined) {
      const running = inferencer;
      await withDeadline(running.stop("SIGTERM"), 15_000, "the inferencer's stop").catch(() => running.stop("SIGKILL"));
    }
    await bus?.close();
    await nats.dispose();
  }
}
