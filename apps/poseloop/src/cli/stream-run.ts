import { mkdir, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { performance } from "node:perf_hooks";
import { AppError, Code, sleep } from "@poseloop/core";
import { FrameResultSchema, StreamAcceptedSchema, type FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { type FrameInput } from "@poseloop/client";
import { LiveLine } from "./cli-io.js";
import type { CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { readBoxesFile } from "./boxes-file.js";
import { containerFor, SOURCE_SCHEMES, sourceKind, VIDEO_EXTENSIONS } from "./ffmpeg-args.js";
import { ffmpegPath, VideoFrameWriter } from "./ffmpeg-video.js";
import { openImageFolder, openVideoSource, syntheticSource, type FrameSource, type SourceFrame } from "./frame-sources.js";
import { modelRefText } from "./job-format.js";
import { protoJson, writeJsonLine } from "./json-output.js";
import { annotatePicture, ServingSchemas } from "./pose-annotation.js";
import { formatRate } from "./progress-format.js";
import { streamOptionsFromArgs } from "./stream-options.js";
import { formatMs, StreamStats } from "./stream-stats.js";

/** How long the switch banner stays on the annotated video. */
const BANNER_SECONDS = 1.5;
/** How often the live line is redrawn, and how often plain output prints a line. */
const LIVE_REDRAW_MS = 200;
const PLAIN_LINE_MS = 1000;

interface Pending {
  readonly frame: SourceFrame;
  sentAt?: number;
}

/** Runs `poseloop stream`: see streamCommand. */
export async function runStream(ctx: CommandContext): Promise<number> {
  const { args } = ctx;
  const out = args.string("out");
  const container = out === undefined ? undefined : containerFor(out);
  if (out !== undefined && container === undefined) {
    throw new UsageError(`--out ${out}: write a video as ${VIDEO_EXTENSIONS.join(", ")}`, "stream");
  }
  // Options are checked before anything is opened; a live source then switches to latest-frame-wins.
  streamOptionsFromArgs(args);
  const boxesPath = args.string("boxes");
  const boxes = boxesPath === undefined ? undefined : await readBoxesFile(ctx.resolvePath(boxesPath), boxesPath);
  // Find ffmpeg before streaming, not at the first answer.
  const encoderPath = out === undefined ? undefined : ffmpegPath(ctx.env);
  const source = await openSource(ctx);
  const options = streamOptionsFromArgs(args, source.live === true);
  const pending = new Map<bigint, Pending>();
  const stats = new StreamStats();
  // The running figures go to stderr with the other messages; stdout gets the summary (or JSON lines).
  const log = ctx.err;
  const live = new LiveLine(log);
  // A live source comes at its own pace already.
  const realtime = args.flag("realtime") && source.live !== true;
  let writer: VideoFrameWriter | undefined;
  let lastModel: string | undefined;
  let bannerFrames = 0;
  let banner: string | undefined;
  let lastPrint = 0;
  // The video draws each version's keypoints as its manifest declares them, across swaps.
  const schemas = out === undefined ? undefined : new ServingSchemas(ctx.inference(), ctx.signal);
  const started = performance.now();

  const frames = async function* (): AsyncGenerator<FrameInput, void, undefined> {
    for await (const frame of source.frames()) {
      if (realtime) {
        const due = started + (frame.ptsUs / 1000);
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait, ctx.signal);
      }
      pending.set(BigInt(frame.number), { frame });
      yield { ...frame.input, id: frame.number, ptsUs: frame.ptsUs, ...(boxes === undefined ? {} : { personBoxes: boxes.get(frame.number) ?? [] }) };
    }
  };

  if (!ctx.json) log.line(`streaming ${source.description} to the inferencer at ${ctx.inference().address}`);
  try {
    const responses = ctx.inference().streamKeypoints(
      {
        ...options,
        signal: ctx.signal,
        onFrameSent: (frameId) => {
          const entry = pending.get(frameId);
          if (entry !== undefined) entry.sentAt = performance.now();
        },
      },
      frames(),
    );
    for await (const response of responses) {
      const payload = response.payload;
      if (payload.case === "accepted") {
        if (payload.value.model !== undefined) schemas?.prefetch(payload.value.model.name);
        if (ctx.json) writeJsonLine(ctx.out, { type: "accepted", accepted: protoJson(StreamAcceptedSchema, payload.value) });
        else live.print(`stream ${payload.value.streamId} accepted; serving ${modelRefText(payload.value.model)}`);
        continue;
      }
      if (payload.case === "dropped") {
        for (const id of payload.value.frameIds) pending.delete(id);
        stats.dropped += payload.value.frameIds.length;
        if (ctx.json) writeJsonLine(ctx.out, { type: "dropped", frames: payload.value.frameIds.map(Number) });
        continue;
      }
      if (payload.case !== "result") continue;
      const result = payload.value;
      const now = performance.now();
      const entry = pending.get(result.frameId);
      pending.delete(result.frameId);
      const latencyMs = entry?.sentAt === undefined ? undefined : now - entry.sentAt;
      const frameNumber = Number(result.frameId);
      // A failed frame may name no model: count it under the version serving around it.
      const model = result.model === undefined ? (lastModel ?? "none") : modelRefText(result.model);
      const ok = result.status === undefined || result.status.code === 0;
      stats.result(now, latencyMs, model, frameNumber, result.persons.length, ok);

      if (lastModel !== undefined && result.model !== undefined && model !== lastModel) {
        banner = `MODEL SWITCH ${lastModel} -> ${model}`;
        bannerFrames = Math.max(1, Math.round(BANNER_SECONDS * source.fps));
        if (ctx.json) writeJsonLine(ctx.out, { type: "model_switch", frame: frameNumber, from: lastModel, to: model });
        else live.print(`frame ${frameNumber}: serving version switched ${lastModel} -> ${model}`);
      }
      if (result.model !== undefined) lastModel = model;

      if (ctx.json) {
        writeJsonLine(ctx.out, { type: "result", frame: frameNumber, latencyMs: latencyMs === undefined ? null : round(latencyMs), result: protoJson(FrameResultSchema, result) });
      } else if (!ok) {
        live.print(`frame ${frameNumber}${entry?.frame.name === undefined ? "" : ` (${entry.frame.name})`} failed: ${result.status?.message ?? ""}`);
      }

      if (out !== undefined && container !== undefined && encoderPath !== undefined && entry !== undefined) {
        const picture = await entry.frame.picture();
        if (writer === undefined) {
          const output = ctx.resolvePath(out);
          // ffmpeg makes no folders: `--out out/annotated.mp4` works in a fresh checkout.
          await mkdir(dirname(output), { recursive: true });
          writer = new VideoFrameWriter(encoderPath, { output, width: picture.width, height: picture.height, fps: source.fps, container });
        }
        if (picture.width !== writer.spec.width || picture.height !== writer.spec.height) {
          throw new AppError(
            Code.INVALID_ARGUMENT,
            `frame ${frameNumber}${entry.frame.name === undefined ? "" : ` (${entry.frame.name})`} is ${picture.width}x${picture.height}; the video is ${writer.spec.width}x${writer.spec.height}: --out needs frames of one size`,
          );
        }
        const schema = ok ? await schemas?.schemaFor(result.model) : undefined;
        const caption = `${model}  ${formatRate(stats.fps)} fps  ${formatMs(latencyMs ?? Number.NaN)}  #${frameNumber}`;
        const annotated = annotatePicture(picture, ok ? result.persons : [], {
          caption,
          ...(bannerFrames > 0 && banner !== undefined ? { banner } : {}),
          ...(options.minKeypointScore === undefined ? {} : { minScore: options.minKeypointScore }),
          ...(schema === undefined ? {} : { schema }),
        });
        await writer.write(annotated.data);
      }
      if (bannerFrames > 0) bannerFrames--;

      if (!ctx.json && now - lastPrint >= (log.isTTY ? LIVE_REDRAW_MS : PLAIN_LINE_MS)) {
        lastPrint = now;
        const line = liveText(stats, frameNumber, model, result);
        if (log.isTTY) live.update(line);
        else log.line(line);
      }
    }
    live.clear();
    await writer?.finish();
  } catch (error) {
    live.clear();
    if (ctx.signal.aborted && AppError.is(error, Code.CANCELLED)) {
      // Ctrl-C ends a live stream: keep the video of what was streamed.
      const wrote = writer === undefined ? undefined : await writer.finish().then(() => out, () => undefined);
      printSummary(ctx, stats, performance.now() - started, wrote, source.skipped?.() ?? 0);
      ctx.err.line(`poseloop: interrupted after ${stats.results} frames`);
      return ExitCode.INTERRUPTED;
    }
    if (writer !== undefined) {
      await writer.abort();
      await rm(writer.spec.output, { force: true });
    }
    throw error;
  } finally {
    await source.close();
  }
  printSummary(ctx, stats, performance.now() - started, out, source.skipped?.() ?? 0);
  if (stats.results === 0) {
    ctx.err.line("poseloop: no frame was answered");
    return ExitCode.FAILURE;
  }
  if (stats.failed > 0) {
    ctx.err.line(`poseloop: ${stats.failed} of ${stats.results} frames failed`);
    return ExitCode.FAILURE;
  }
  return ExitCode.OK;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

function liveText(stats: StreamStats, frame: number, model: string, result: FrameResult): string {
  const latency = stats.latency();
  const server = result.timings === undefined || result.timings.totalUs === 0 ? "" : `  server ${formatMs(result.timings.totalUs / 1000)}`;
  const dropped = stats.dropped > 0 ? `  dropped ${stats.dropped}` : "";
  return `frame ${frame}  ${formatRate(stats.fps)} fps  latency p50 ${formatMs(latency.p50)} p95 ${formatMs(latency.p95)}${server}  persons ${result.persons.length}${dropped}  ${model}`;
}

/** `skipped`: frames a live source sent while the stream was busy, never sent on. */
function printSummary(ctx: CommandContext, stats: StreamStats, elapsedMs: number, out: string | undefined, skipped: number): void {
  const latency = stats.latency(true);
  if (ctx.json) {
    writeJsonLine(ctx.out, {
      type: "summary",
      frames: stats.results,
      failed: stats.failed,
      dropped: stats.dropped,
      ...(skipped === 0 ? {} : { skipped }),
      seconds: round(elapsedMs / 1000),
      fps: round(stats.overallFps),
      latencyMs: { p50: round(latency.p50), p95: round(latency.p95), max: round(latency.max) },
      models: stats.models.map((span) => ({ model: span.model, firstFrame: span.firstFrame, lastFrame: span.lastFrame, frames: span.frames })),
      ...(out === undefined ? {} : { output: out }),
    });
    return;
  }
  const lines = [
    `${stats.results} frames in ${(elapsedMs / 1000).toFixed(1)} s: ${formatRate(stats.overallFps)} fps, latency p50 ${formatMs(latency.p50)} p95 ${formatMs(latency.p95)} max ${formatMs(latency.max)}` +
      `${stats.dropped > 0 ? `, ${stats.dropped} dropped` : ""}${skipped > 0 ? `, ${skipped} skipped at the source` : ""}${stats.failed > 0 ? `, ${stats.failed} failed` : ""}`,
    ...stats.models.map((span) => `  ${span.model}: frames ${span.firstFrame}-${span.lastFrame} (${span.frames})`),
  ];
  ctx.out.lines(lines);
  if (out !== undefined) ctx.err.line(`wrote ${out}`);
}

async function openSource(ctx: CommandContext): Promise<FrameSource> {
  const { args } = ctx;
  const input = args.positionals[0];
  const maxFrames = args.int("frames", 1);
  const fps = args.number("fps", { min: 0, minExclusive: true, max: 240 });
  const width = args.int("width", 16, 8192);
  if (args.flag("synthetic")) {
    if (input !== undefined) throw new UsageError(`--synthetic renders its own frames; "${input}" is not read`, "stream");
    return syntheticSource({
      width: width ?? 320,
      height: args.int("height", 16, 8192) ?? 240,
      frames: maxFrames ?? 60,
      fps: fps ?? 10,
      seed: args.int("seed", 0) ?? 1,
      people: args.int("people", 1, 20) ?? 3,
    });
  }
  if (input === undefined) throw new UsageError("give a video file, a URL, a camera device, an image folder or --synthetic", "stream");
  for (const flag of ["height", "seed", "people"]) {
    if (args.has(flag)) throw new UsageError(`--${flag} applies to --synthetic only`, "stream");
  }
  const kind = sourceKind(input);
  if (kind === undefined) throw new UsageError(`${input}: not a source ffmpeg is asked to open (URLs: ${SOURCE_SCHEMES.map((s) => `${s}://`).join(", ")})`, "stream");
  if (kind !== "file") {
    return openVideoSource(input, input, {
      ffmpeg: ffmpegPath(ctx.env),
      kind,
      signal: ctx.signal,
      ...(width === undefined ? {} : { width }),
      ...(fps === undefined ? {} : { fps }),
      ...(maxFrames === undefined ? {} : { maxFrames }),
    });
  }
  const path = ctx.resolvePath(input);
  const info = await stat(path).catch((error: unknown) => {
    throw new AppError(Code.NOT_FOUND, `${input}: no such file or folder`, { cause: error });
  });
  if (info.isDirectory()) {
    if (width !== undefined) throw new UsageError("--width scales a video; images are sent as they are", "stream");
    return openImageFolder(path, input, { fps: fps ?? 10, ...(maxFrames === undefined ? {} : { maxFrames }) });
  }
  return openVideoSource(path, input, {
    ffmpeg: ffmpegPath(ctx.env),
    signal: ctx.signal,
    ...(width === undefined ? {} : { width }),
    ...(fps === undefined ? {} : { fps }),
    ...(maxFrames === undefined ? {} : { maxFrames }),
  });
}
