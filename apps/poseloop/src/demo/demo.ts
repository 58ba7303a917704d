import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { InferenceClient, TrainerClient, type FrameInput } from "@poseloop/client";
import { AppError, Code, sleep, type Env } from "@poseloop/core";
import { syntheticClip, type ClipFrame } from "@poseloop/data";
import type { ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { ServingState, type FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { JobState, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { RgbImage } from "@poseloop/vision";
import { LineWriter, LiveLine, type CliOutput } from "../cli/cli-io.js";
import { VideoContainer } from "../cli/ffmpeg-args.js";
import { ffmpegPath, VideoFrameWriter } from "../cli/ffmpeg-video.js";
import { formatProgressBar, formatProgressLine } from "../cli/progress-format.js";
import { annotatePicture } from "../cli/pose-annotation.js";
import { percentile } from "../cli/stream-stats.js";
import { serviceEntry } from "./service-entry.js";
import { TraceCollector, type CollectedSpan } from "./trace-collector.js";

export interface DemoOptions {
  /** The repository root: experiments/ and the output folders (out/, .poseloop/) are found from it. */
  readonly root: string;
  readonly env: Env;
  readonly stdout: CliOutput;
  readonly signal: AbortSignal;
}

interface RunningService {
  readonly name: string;
  readonly child: ChildProcess;
  readonly address: string;
  readonly exited: Promise<number | null>;
}

const FPS = 10;
const WIDTH = 256;
const HEIGHT = 192;
/** Frames streamed after the final version took over, so the video ends on it. */
const TAIL_FRAMES = 30;
/**
 * The person detector the demo serves: trained by this project's trainer from a committed recipe and shipped in
 * the repository (models/person-detector/README.md), imported as a user would import their own.
 */
const DETECTOR = "person-detector";
const DETECTOR_DIR = "models/person-detector";
/** Frames of one shot of the video: four people walk through it (two crossing), then another shot starts. */
const SHOT_FRAMES = 100;

/** Starts a service from its build, its JSON log going to a file; resolves once it listens. */
async function startService(name: string, entry: string, env: Env, logPath: string): Promise<RunningService> {
  const child = spawn(process.execPath, [entry], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(logPath);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const lastLines: string[] = [];
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new AppError(Code.DEADLINE_EXCEEDED, `${name} did not start within 60 s; see ${logPath}`)), 60_000);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new AppError(Code.FAILED_PRECONDITION, `${name} exited with code ${code} while starting:\n${lastLines.join("\n")}`));
    });
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        log.write(`${line}\n`);
        lastLines.push(line);
        if (lastLines.length > 5) lastLines.shift();
        try {
          const record = JSON.parse(line) as Record<string, unknown>;
          if (record["msg"] === "listening" && typeof record["address"] === "string") {
            clearTimeout(timer);
            resolve(record["address"]);
          }
        } catch {
          // Not a log record (a runtime warning): kept in the log file.
        }
      });
    }
  });
  return { name, child, address, exited };
}

/**
 * The demo's video, without end: shots of the synthetic multi-person clip (people walking in, out and across),
 * each with other people in another place. Frames carry no boxes: the inferencer's detector finds the people.
 */
function* demoFrames(): Generator<ClipFrame> {
  for (let shot = 0; ; shot++) yield* syntheticClip({ width: WIDTH, height: HEIGHT, frames: SHOT_FRAMES, seed: 77 + shot, fps: FPS });
}

/** The demo's epochs with the LR drops where the experiment has them (at 70% and 90% of the run). */
function scheduleFor(epochs: number): Record<string, string> {
  if (!Number.isInteger(epochs) || epochs < 1) throw new AppError(Code.INVALID_ARGUMENT, `POSELOOP_DEMO_EPOCHS must be a positive integer, got ${epochs}`);
  const steps = [...new Set([Math.round(epochs * 0.7), Math.round(epochs * 0.9)])].filter((s) => s > 0 && s < epochs);
  return { "TRAIN.END_EPOCH": String(epochs), "TRAIN.LR_STEP": `[${steps.join(", ")}]`, "TRAIN.LR_SCHEDULE": steps.length === 0 ? "constant" : "multistep" };
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const ap = (value: number | undefined): string => (value === undefined || value < 0 ? "-" : value.toFixed(3));

/**
 * `npm start`: the whole loop on one machine with no server and no configuration. Starts the trainer and the
 * inferencer on the embedded bus, trains the demo model with a live progress bar, publishes an int8 version
 * after every epoch, streams a synthetic video of several people through the inferencer from the first version
 * on (each new version is hot-swapped in mid-stream; the shipped person detector, imported at the start, finds
 * and the tracker follows the people, with no boxes from the client), and ends with a summary, an annotated video
 * in ./out and the trace chain from the training job to the frames.
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { root, env, signal } = options;
  const out = new LineWriter(options.stdout);
  const live = new LiveLine(out);
  const outDir = join(root, "out");
  await mkdir(outDir, { recursive: true });
  const epochs = env["POSELOOP_DEMO_EPOCHS"] ?? "4";
  const externalTraces = env["OTEL_EXPORTER_OTLP_ENDPOINT"] !== undefined;
  const collector = externalTraces ? undefined : await TraceCollector.start();
  const serviceEnv: Env = {
    POSELOOP_LOG_LEVEL: "info",
    POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
    POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
    POSELOOP_MODEL: "demo",
    POSELOOP_DETECTOR_MODEL: DETECTOR,
    POSELOOP_WORK_DIR: join(root, ".poseloop/work"),
    POSELOOP_DATA_ROOT: join(root, ".poseloop/data"),
    ...(env["POSELOOP_NATS_URL"] === undefined ? { POSELOOP_BUS_DIR: env["POSELOOP_BUS_DIR"] ?? join(root, ".poseloop/bus") } : {}),
    ...(collector === undefined ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "500" }),
  };
  const started = performance.now();
  const services: RunningService[] = [];
  let trainer: TrainerClient | undefined;
  let inference: InferenceClient | undefined;
  try {
    out.line("PoseLoop demo: train a pose model, publish it as int8, hot-swap it into a live stream.");
    for (const name of ["trainer", "inferencer"] as const) {
      services.push(await startService(name, serviceEntry(name), serviceEnv, join(outDir, `${name}.log`)));
    }
    const bus = env["POSELOOP_NATS_URL"] === undefined ? `the embedded bus (${relative(root, serviceEnv["POSELOOP_BUS_DIR"] ?? "") || "."})` : `NATS at ${env["POSELOOP_NATS_URL"]}`;
    out.line(`  trainer on ${services[0]?.address}, inferencer on ${services[1]?.address}, over ${bus}; logs in out/`);
    trainer = new TrainerClient({ address: services[0]?.address ?? "" });
    inference = new InferenceClient({ address: services[1]?.address ?? "" });
    const [detectorModel, detectorManifest] = await Promise.all([readFile(join(root, DETECTOR_DIR, "model.int8.onnx")), readFile(join(root, DETECTOR_DIR, "manifest.yaml"), "utf8")]);
    const imported = await trainer.importModel({ modelName: DETECTOR, model: detectorModel, manifestYaml: detectorManifest, reason: "npm start: the shipped person detector", labels: { source: "npm-start" } });
    const detectorVersion = imported.manifest?.model?.version ?? "";
    out.line(`  detector ${DETECTOR}@${detectorVersion}: ${DETECTOR_DIR}, ${imported.alreadyImported ? "imported by an earlier run" : "imported"} (${detectorModel.length} bytes, int8); it finds the stream's people, tracked across frames`);

    const yaml = await readFile(join(root, "experiments/synthetic/lite_128x96_demo.yaml"), "utf8");
    // A few-minute run learns faster with the three-width net at quarter-resolution heatmaps: the recipe's 1/16
    // stage costs 1.45x a step and pays only from about the fifth minute (measured on clean clones: 3 epochs of
    // it AP 0.194 in 330 s, 4 of the three-width net 0.237 in 303 s); its half-resolution head costs 1.5x an
    // epoch again and is behind for the first four minutes. One replica, since a second would take the core the
    // inferencer streams on, so batch 8 with the LR tuned for it and no warm-up (the recipe's 6e-3 and warm-up are
    // for its two replicas' 16-sample updates).
    const overrides = {
      "PUBLISH.MODE": "every_epoch",
      "MODEL.EXTRA.CHANNELS": "[16, 32, 64]",
      "MODEL.HEATMAP_SIZE": "[24, 32]",
      "TRAIN.REPLICAS": "1",
      "TRAIN.LR": "0.003",
      "TRAIN.WARMUP_STEPS": "0",
      // The recipe's disk cache of decoded pictures (~0.6 GB) pays over ten epochs, not over a quick start's few.
      "DATASET.DISK_CACHE": "false",
      ...scheduleFor(Number(epochs)),
    };
    const { job } = await trainer.startTraining({ experimentYaml: yaml, overrides, labels: { source: "npm-start" } });
    const jobId = job?.jobId ?? "";
    out.line(`  job ${jobId}: experiments/synthetic/lite_128x96_demo.yaml with the three-width net for ${epochs} epochs (the first run renders the synthetic dataset first)`);

    const publications: ModelManifest[] = [];
    const stream = new DemoStream(inference, join(outDir, "poseloop-demo.mp4"), ffmpegPath(env), signal);
    let streaming: Promise<void> | undefined;
    let final: JobEvent | undefined;
    for await (const event of trainer.watchJob(jobId, { signal })) {
      const e = event.event;
      if (e.case === "progress") {
        if (out.isTTY) live.update(formatProgressBar(e.value, out.columns));
        else if (e.value.stepInEpoch === e.value.stepsPerEpoch) out.line(formatProgressLine(e.value));
      } else if (e.case === "validation") {
        live.print(`  epoch ${e.value.epoch}: validation AP ${ap(e.value.metrics?.ap)} (AP50 ${ap(e.value.metrics?.ap50)})${e.value.isBest ? "  best so far" : ""}`);
      } else if (e.case === "published" && e.value.manifest !== undefined) {
        const m = e.value.manifest;
        publications.push(m);
        live.print(`  published demo@${m.model?.version}: int8 AP ${ap(m.metrics?.ap)} (fp32 ${ap(m.fp32Metrics?.ap)}), ${m.artifacts.find((a) => a.digest === m.model?.digest)?.sizeBytes ?? 0n} bytes`);
        streaming ??= stream.run(live);
      } else if (e.case === "warning") {
        live.print(`  warning: ${e.value.message}`);
      } else if (e.case === "stateChanged" && [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(e.value.to)) {
        final = event;
      }
    }
    live.clear();
    const trainedMs = performance.now() - started;
    const state = final?.event.case === "stateChanged" ? final.event.value : undefined;
    if (state?.to !== JobState.SUCCEEDED) throw new AppError(Code.ABORTED, `training ${JobState[state?.to ?? JobState.UNSPECIFIED]}: ${state?.error?.message ?? state?.reason ?? "no result"}`);
    const last = publications.at(-1);
    if (last === undefined) throw new AppError(Code.FAILED_PRECONDITION, "the job published nothing (see the quantization gate in out/trainer.log)");
    // The stream goes on until the last version serves, then a few more seconds of it.
    stream.finishAfter(last.model?.version ?? "");
    await streaming;
    await stream.close();

    for (const service of services) service.child.kill("SIGTERM");
    await Promise.all(services.map((service) => service.exited));
    services.length = 0;
    const summary = stream.summary();
    out.line("");
    out.line("Summary");
    out.line(`  training:   ${epochs} epochs in ${seconds(trainedMs)} (job ${jobId})`);
    out.line(`  serving:    demo@${last.model?.version}  int8 AP ${ap(last.metrics?.ap)}, fp32 AP ${ap(last.fp32Metrics?.ap)} on ${last.metrics?.numImages ?? 0} validation images`);
    out.line(`  stream:     ${summary.frames} frames at ${FPS} fps, ${summary.failed} failed; latency p50 ${summary.p50.toFixed(1)} ms, p95 ${summary.p95.toFixed(1)} ms; inference ${summary.inferenceFps.toFixed(0)} frames/s of model time`);
    out.line(`  people:     ${DETECTOR}@${detectorVersion} found ${summary.people} people in ${summary.frames} frames (${(summary.people / Math.max(1, summary.frames)).toFixed(1)} a frame, no client boxes), ${summary.tracks} track ids`);
    out.line(`  hot swaps:  ${summary.switches.map((s) => `frame ${s.frame} -> ${s.version}`).join(", ") || "none"}`);
    out.line(`  video:      ${relative(process.cwd(), join(outDir, "poseloop-demo.mp4"))} (skeletons coloured by track and the serving version burnt in)`);
    if (collector !== undefined) {
      await sleep(300);
      for (const line of traceSummary(collector.spans, jobId)) out.line(line);
    } else {
      out.line(`  traces:     exported to ${env["OTEL_EXPORTER_OTLP_ENDPOINT"]}; look up trace ${job?.traceId ?? ""}`);
    }
    out.line(`  total:      ${seconds(performance.now() - started)}`);
    return 0;
  } finally {
    live.clear();
    trainer?.close();
    inference?.close();
    for (const service of services) service.child.kill("SIGTERM");
    await Promise.all(services.map((service) => service.exited));
    await collector?.close();
  }
}

/** The trace chain of the run: job → publish → model load → frames. */
function traceSummary(spans: readonly CollectedSpan[], jobId: string): string[] {
  const job = spans.find((s) => s.name === "training.job" && s.attributes["poseloop.training.job_id"] === jobId);
  if (job === undefined) return ["  traces:     no job span was exported"];
  const inTrace = spans.filter((s) => s.traceId === job.traceId);
  const publishes = inTrace.filter((s) => s.name === "registry.publish");
  const publishIds = new Set(publishes.map((s) => s.spanId));
  const loads = spans.filter((s) => s.name === "model.load" && s.links.some((l) => publishIds.has(l.spanId)));
  const frames = spans.filter((s) => s.name === "frame" && s.attributes["poseloop.training.job_id"] === jobId);
  const linked = frames.filter((s) => s.links.some((l) => publishIds.has(l.spanId)));
  const count = (name: string) => inTrace.filter((s) => s.name === name).length;
  return [
    `  traces:     trace ${job.traceId}: training.job (${count("training.epoch")} epochs, ${count("training.validate")} validations, ${count("training.quantize")} int8 gates)`,
    `              -> ${publishes.length} registry.publish -> ${loads.length} model.load in the inferencer (linked) -> ${frames.length} frame spans naming job ${jobId} (${linked.length} linked to their publication)`,
  ];
}

interface StreamSummary {
  frames: number;
  failed: number;
  p50: number;
  p95: number;
  inferenceFps: number;
  switches: { frame: number; version: string }[];
  /** People found over all frames, and the distinct track ids they were given. */
  people: number;
  tracks: number;
}

/** The demo's live video: synthetic frames at 10 fps through the inferencer, annotated into an mp4. */
class DemoStream {
  readonly #client: InferenceClient;
  readonly #writer: VideoFrameWriter;
  readonly #signal: AbortSignal;
  readonly #stop = new AbortController();
  readonly #latencies: number[] = [];
  readonly #switches: { frame: number; version: string }[] = [];
  readonly #tracks = new Set<number>();
  #people = 0;
  #finalVersion: string | undefined;
  #tail = -1;
  #frames = 0;
  #failed = 0;
  #inferenceUs = 0;

  constructor(client: InferenceClient, path: string, ffmpeg: string, signal: AbortSignal) {
    this.#client = client;
    this.#signal = signal;
    this.#writer = new VideoFrameWriter(ffmpeg, { output: path, width: WIDTH, height: HEIGHT, fps: FPS, container: VideoContainer.H264 });
  }

  /** Stop once `version` has answered TAIL_FRAMES frames. */
  finishAfter(version: string): void {
    this.#finalVersion = version;
  }

  async run(live: LiveLine): Promise<void> {
    // The first version (and the detector imported at the start) may still be loading in the inferencer.
    for (const model of ["", DETECTOR]) {
      for (let i = 0; i < 200 && (await this.#client.getServingModel(model)).state !== ServingState.SERVING; i++) await sleep(100, this.#signal);
    }
    const pictures = new Map<bigint, { image: RgbImage; sentAt: number }>();
    const start = performance.now();
    const stop = AbortSignal.any([this.#signal, this.#stop.signal]);
    const video = demoFrames();
    const frames = async function* (this: DemoStream): AsyncGenerator<FrameInput> {
      for (let index = 0; !stop.aborted; index++) {
        const due = start + (index * 1000) / FPS;
        if (due > performance.now()) await sleep(due - performance.now(), stop).catch(() => undefined);
        if (stop.aborted) return;
        const { image } = video.next().value as ClipFrame;
        pictures.set(BigInt(index + 1), { image, sentAt: performance.now() });
        yield { id: index + 1, ptsUs: Math.round((index * 1e6) / FPS), raw: { width: WIDTH, height: HEIGHT, data: image.data } };
      }
    }.call(this);
    let version = "";
    for await (const response of this.#client.streamKeypoints({ streamName: "npm-start-demo", personSource: "detector", tracking: true, signal: this.#signal }, frames)) {
      if (response.payload.case !== "result") continue;
      const result: FrameResult = response.payload.value;
      const picture = pictures.get(result.frameId);
      pictures.delete(result.frameId);
      if (picture === undefined) continue;
      this.#frames++;
      this.#latencies.push(performance.now() - picture.sentAt);
      this.#inferenceUs += result.timings?.inferenceUs ?? 0;
      const ok = (result.status?.code ?? 0) === 0;
      if (!ok) this.#failed++;
      this.#people += result.persons.length;
      for (const person of result.persons) if (person.trackId !== undefined) this.#tracks.add(person.trackId);
      const answeredBy = result.model?.version ?? "";
      let banner: string | undefined;
      if (answeredBy !== version && answeredBy !== "") {
        if (version !== "") {
          this.#switches.push({ frame: Number(result.frameId), version: answeredBy });
          live.print(`  stream: frame ${result.frameId} answered by demo@${answeredBy} (hot swap, no frame dropped)`);
        }
        version = answeredBy;
        banner = this.#switches.length === 0 ? undefined : `MODEL SWITCH -> ${answeredBy}`;
      }
      const caption = `demo@${version}  frame ${result.frameId}  ${(this.#latencies.at(-1) ?? 0).toFixed(0)} ms`;
      await this.#writer.write(annotatePicture(picture.image, result.persons, { caption, ...(banner === undefined ? {} : { banner }) }).data);
      if (this.#finalVersion !== undefined && version === this.#finalVersion) {
        if (this.#tail < 0) this.#tail = 0;
        if (++this.#tail >= TAIL_FRAMES) this.#stop.abort();
      }
    }
  }

  async close(): Promise<void> {
    this.#stop.abort();
    await this.#writer.finish();
  }

  summary(): StreamSummary {
    const sorted = [...this.#latencies].sort((a, b) => a - b);
    return {
      frames: this.#frames,
      failed: this.#failed,
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      inferenceFps: this.#inferenceUs > 0 ? this.#frames / (this.#inferenceUs / 1e6) : 0,
      switches: this.#switches,
      people: this.#people,
      tracks: this.#tracks.size,
    };
  }
}
