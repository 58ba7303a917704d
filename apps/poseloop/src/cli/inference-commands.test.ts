import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { renderSyntheticScene, SeededRandom } from "@poseloop/data";
import { InferenceService, ServingState, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { decodeImage, encodePng } from "@poseloop/vision";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fakeJob, startFakeInferencer, startFakeTrainer, type FakeInferencerScript, type FakeServer } from "@poseloop/client/testing";
import { captureIo } from "../testing/capture-io.js";
import { startServiceStub } from "../testing/service-stub.js";
import { ffmpegPath, VideoFrameReader, VideoFrameWriter } from "./ffmpeg-video.js";
import { runCli } from "./run-cli.js";

const cleanups: (() => Promise<void> | void)[] = [];
let dir: string;
beforeEach(async () => {
  const temp = await makeTempDir("poseloop-cli-");
  cleanups.push(temp.remove);
  dir = temp.path;
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function inferencer(script: FakeInferencerScript = {}): Promise<FakeServer> {
  const server = await startFakeInferencer(script);
  cleanups.push(() => server.stop());
  return server;
}

async function readVideo(path: string): Promise<{ info: { width: number; height: number }; frames: Uint8Array[] }> {
  const reader = await VideoFrameReader.open(ffmpegPath({}), { input: path });
  cleanups.push(() => reader.close());
  const frames: Uint8Array[] = [];
  for await (const frame of reader.frames()) frames.push(frame);
  return { info: reader.info, frames };
}

function pixel(frame: Uint8Array, width: number, x: number, y: number): number[] {
  return [...frame.subarray(3 * (y * width + x), 3 * (y * width + x) + 3)];
}

const isYellow = ([r, g, b]: number[]): boolean => r! > 180 && g! > 160 && b! < 110;

describe("poseloop stream", () => {
  it("streams synthetic frames, reports the version switch and writes an annotated MP4 that shows it", async () => {
    const frames: Frame[] = [];
    const server = await inferencer({ versionFor: (n) => (n < 7 ? "v1" : "v2"), onFrameRead: (frame) => frames.push(frame) });
    const io = captureIo({ cwd: dir, env: { POSELOOP_INFERENCER_ADDR: server.address } });
    const code = await runCli(["stream", "--synthetic", "--frames", "12", "--width", "160", "--height", "120", "--fps", "8", "--out", "out/annotated.mp4"], io);
    expect(code).toBe(0);
    const log = io.stderrText();
    expect(log).toMatch(new RegExp(`^streaming 12 synthetic frames 160x120 \\(seed 1\\) at 8 fps to the inferencer at ${server.address}\n`));
    expect(log).toContain("frame 7: serving version switched demo@v1 -> demo@v2\n");
    expect(log).toMatch(/\nwrote out\/annotated\.mp4\n$/);
    // stdout is the summary alone.
    expect(io.stdoutText()).toMatch(/^12 frames in [\d.]+ s: [\d.]+ fps, latency p50 [\d.]+ ms p95 [\d.]+ ms max [\d.]+ ms\n {2}demo@v1: frames 1-6 \(6\)\n {2}demo@v2: frames 7-12 \(6\)\n$/);
    expect(frames.map((frame) => frame.image.case)).toEqual(Array(12).fill("raw"));
    expect(frames[0]?.image.value).toMatchObject({ width: 160, height: 120 });
    expect(frames.map((frame) => Number(frame.frameId))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(frames[1]?.ptsUs).toBe(125_000n);

    // --out made the folder it writes into.
    const video = await readVideo(join(dir, "out", "annotated.mp4"));
    expect(video.info).toMatchObject({ width: 160, height: 120 });
    expect(video.frames).toHaveLength(12);
    // A yellow border marks the switch for 1.5 s (12 frames at 8 fps: to the end), and only then.
    expect(isYellow(pixel(video.frames[6]!, 160, 1, 60))).toBe(true);
    expect(isYellow(pixel(video.frames[11]!, 160, 1, 60))).toBe(true);
    expect(video.frames.slice(0, 6).some((frame) => isYellow(pixel(frame, 160, 1, 60)) && isYellow(pixel(frame, 160, 158, 60)))).toBe(false);
  });

  it("prints JSON lines: accepted, one result per frame, the switch and a summary", async () => {
    const server = await inferencer({ versionFor: (n) => (n < 3 ? "v1" : "v2") });
    const io = captureIo({ env: { POSELOOP_INFERENCER_ADDR: server.address } });
    expect(await runCli(["stream", "--synthetic", "--frames", "4", "--width", "64", "--height", "48", "--json"], io)).toBe(0);
    const lines = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown> & { type: string });
    expect(lines.map((line) => line.type)).toEqual(["accepted", "result", "result", "model_switch", "result", "result", "summary"]);
    expect(lines[3]).toEqual({ type: "model_switch", frame: 3, from: "demo@v1", to: "demo@v2" });
    const result = lines[1] as unknown as { frame: number; latencyMs: number; result: { frameId: string; persons: { keypoints: unknown[] }[]; model: { version: string } } };
    expect(result.frame).toBe(1);
    expect(result.latencyMs).toBeGreaterThan(0);
    expect(result.result.frameId).toBe("1");
    expect(result.result.persons[0]?.keypoints).toHaveLength(17);
    expect(lines.at(-1)).toMatchObject({ type: "summary", frames: 4, failed: 0, dropped: 0, models: [{ model: "demo@v1", frames: 2 }, { model: "demo@v2", frames: 2 }] });
  });

  it("sends the images of a folder encoded, in natural order, and a video as raw frames of its size", async () => {
    const images = join(dir, "images");
    await mkdir(images);
    for (const n of [10, 2, 1]) {
      const scene = renderSyntheticScene(new SeededRandom(n), { width: 48, height: 32 });
      await writeFile(join(images, `${n}.png`), await encodePng(scene.image));
    }
    await writeFile(join(images, "notes.txt"), "not an image");
    const seen: Frame[] = [];
    const server = await inferencer({ onFrameRead: (frame) => seen.push(frame) });
    const env = { POSELOOP_INFERENCER_ADDR: server.address };
    const folder = captureIo({ cwd: dir, env });
    expect(await runCli(["stream", "images", "--out", "folder.gif"], folder)).toBe(0);
    expect(folder.stderrText()).toContain("streaming 3 images from images at 10 fps");
    expect(seen.map((frame) => frame.image.case)).toEqual(["encoded", "encoded", "encoded"]);
    expect((await readVideo(join(dir, "folder.gif"))).frames).toHaveLength(3);

    const writer = new VideoFrameWriter(ffmpegPath({}), { output: join(dir, "clip.mp4"), width: 64, height: 48, fps: 20, container: "h264" });
    for (let i = 0; i < 5; i++) await writer.write(new Uint8Array(64 * 48 * 3).fill(40 * i));
    await writer.finish();
    seen.length = 0;
    const video = captureIo({ cwd: dir, env });
    expect(await runCli(["stream", "clip.mp4", "--frames", "4"], video)).toBe(0);
    expect(video.stderrText()).toContain("streaming video clip.mp4 (64x48, 20 fps)");
    expect(seen).toHaveLength(4);
    expect(seen[0]?.image).toMatchObject({ case: "raw", value: { width: 64, height: 48, format: 1 } });
    expect(seen[3]?.ptsUs).toBe(150_000n);
  });

  it("on Ctrl-C stops streaming, keeps the video of the frames so far and exits 130", async () => {
    const server = await inferencer();
    const controller = new AbortController();
    const io = captureIo({ cwd: dir, env: { POSELOOP_INFERENCER_ADDR: server.address }, signal: controller.signal });
    const run = runCli(["stream", "--synthetic", "--frames", "1000", "--fps", "20", "--realtime", "--width", "64", "--height", "48", "--out", "live.mp4"], io);
    setTimeout(() => controller.abort(), 600);
    expect(await run).toBe(130);
    expect(io.stderrText()).toMatch(/\nwrote live\.mp4\nposeloop: interrupted after \d+ frames\n$/);
    expect(io.stdoutText()).toMatch(/^\d+ frames in /);
    const video = await readVideo(join(dir, "live.mp4"));
    expect(video.frames.length).toBeGreaterThan(3);
    expect(video.frames.length).toBeLessThan(100);
  });

  it("reports failed frames and exits 1; a missing video is one clear line", async () => {
    const server = await inferencer({ failFrames: [3] });
    const env = { POSELOOP_INFERENCER_ADDR: server.address };
    const io = captureIo({ env });
    expect(await runCli(["stream", "--synthetic", "--frames", "5", "--width", "64", "--height", "48"], io)).toBe(1);
    expect(io.stderrText()).toContain("frame 3 failed: corrupt image\n");
    expect(io.stdoutText()).toMatch(/^5 frames in .*, 1 failed\n/);
    expect(io.stderrText().trimEnd().split("\n").at(-1)).toBe("poseloop: 1 of 5 frames failed");

    const missing = captureIo({ cwd: dir, env });
    expect(await runCli(["stream", "nope.mp4"], missing)).toBe(1);
    expect(missing.stderrText()).toBe("poseloop: nope.mp4: no such file or folder\n");
  });
});

describe("poseloop detect", () => {
  it("prints each person's keypoints, writes an annotated PNG, and answers JSON", async () => {
    const scene = renderSyntheticScene(new SeededRandom(3), { width: 64, height: 48 });
    await writeFile(join(dir, "photo.png"), await encodePng(scene.image));
    const server = await inferencer();
    const env = { POSELOOP_INFERENCER_ADDR: server.address };
    const io = captureIo({ cwd: dir, env });
    expect(await runCli(["detect", "photo.png", "--out", "annotated.png", "--max-persons", "2"], io)).toBe(0);
    const lines = io.stdoutText().trimEnd().split("\n");
    expect(lines[0]).toMatch(/^photo\.png \(64x48\): 1 person, model demo@v1, [\d.]+ ms, server 1\.5 ms$/);
    expect(lines[1]).toBe("person 1: score 0.90, box 19,5 26x38");
    expect(lines[2]).toMatch(/^ {2}nose +32\.0 +8\.9 {2}0\.90$/);
    // The keypoints alone on stdout; what was written is news for stderr.
    expect(lines).toHaveLength(2 + 17);
    expect(io.stderrText()).toBe("wrote annotated.png\n");
    const annotated = await decodeImage(await readFile(join(dir, "annotated.png")));
    expect(annotated.width).toBe(64);
    expect(annotated.data).not.toEqual(scene.image.data);

    const json = captureIo({ cwd: dir, env });
    expect(await runCli(["detect", "photo.png", "--json"], json)).toBe(0);
    const document = JSON.parse(json.stdoutText()) as { frameId: string; persons: { score: number }[] };
    expect(document).toMatchObject({ frameId: "1", model: { name: "demo", version: "v1" }, imageWidth: 64 });
    // A float32 score prints as the decimal it was set to, not as 0.8999999761581421.
    expect(json.stdoutText()).toContain('"score": 0.9,');

    await writeFile(join(dir, "notes.txt"), "hello");
    const bad = captureIo({ cwd: dir, env });
    expect(await runCli(["detect", "notes.txt"], bad)).toBe(1);
    expect(bad.stderrText()).toBe("poseloop: notes.txt is not a JPEG, PNG or WebP image\n");
  });

  it("sends each --box as a person box, and refuses a malformed one before calling", async () => {
    const scene = renderSyntheticScene(new SeededRandom(3), { width: 64, height: 48 });
    await writeFile(join(dir, "photo.png"), await encodePng(scene.image));
    const server = await inferencer();
    const env = { POSELOOP_INFERENCER_ADDR: server.address };
    expect(await runCli(["detect", "photo.png", "--box", "1,2,30,40", "--box", " 20.5, 0, 10, 12 "], captureIo({ cwd: dir, env }))).toBe(0);
    const request = server.calls.find((call) => call.method === "detectKeypoints")?.request as { frame: { personBoxes: { x: number; y: number; width: number; height: number }[] } };
    expect(request.frame.personBoxes.map(({ x, y, width, height }) => [x, y, width, height])).toEqual([
      [1, 2, 30, 40],
      [20.5, 0, 10, 12],
    ]);

    for (const [box, message] of [
      ["1,2,3", "expected X,Y,W,H (four numbers in pixels)"],
      ["1,2,x,4", "expected X,Y,W,H (four numbers in pixels)"],
      ["1,2,0,4", "width and height must be > 0"],
    ]) {
      const io = captureIo({ cwd: dir, env });
      expect(await runCli(["detect", "photo.png", "--box", box as string], io)).toBe(2);
      expect(io.stderrText().split("\n")[0]).toBe(`poseloop: --box ${box}: ${message}`);
    }
    expect(server.calls.filter((call) => call.method === "detectKeypoints")).toHaveLength(1);
  });
});

describe("poseloop models", () => {
  it("shows the serving version from the inferencer and the published versions from the trainer, each with its publication time", async () => {
    const server = await inferencer();
    const at = (minute: number) => timestampFromMs(Date.UTC(2026, 10, 27, 23, minute));
    const publishedEvent = (version: string, minute: number) => ({
      event: { case: "published" as const, value: { promoted: true, manifest: { model: { name: "demo", version }, createdAt: at(minute) } } },
    });
    const trainer = await startFakeTrainer({
      // One job still running, as the trainer's newest often is: its watch stays open once its log is read.
      live: true,
      jobs: [
        fakeJob({ jobId: "job-3", state: JobState.RUNNING, published: [{ name: "demo", version: "v3" }, { name: "demo", version: "v4" }] }),
        fakeJob({ jobId: "job-2", state: JobState.SUCCEEDED, finishedAt: at(50), published: [{ name: "demo", version: "v2" }, { name: "other", version: "x" }] }),
        fakeJob({ jobId: "job-1", state: JobState.SUCCEEDED, finishedAt: at(50), published: [{ name: "demo", version: "v1" }] }),
      ],
      events: {
        "job-3": [publishedEvent("v3", 40), { event: { case: "progress", value: { epoch: 3 } } }, publishedEvent("v4", 45)],
        "job-2": [publishedEvent("v2", 30), { event: { case: "published", value: { manifest: { model: { name: "other", version: "x" }, createdAt: at(31) } } } }],
        "job-1": [publishedEvent("v1", 20)],
      },
    });
    cleanups.push(() => trainer.stop());
    const env = { POSELOOP_INFERENCER_ADDR: server.address, POSELOOP_TRAINER_ADDR: trainer.address };
    const io = captureIo({ env });
    expect(await runCli(["models"], io)).toBe(0);
    expect(io.stdoutText().split("\n")).toEqual([
      `model demo on the inferencer at ${server.address}: SERVING`,
      "  version     demo@v2 (int8, lite, AP 0.705)",
      "  loaded      2026-11-27T23:16:00Z",
      "  trained by  job job-1 (epoch 20, step 1200)",
      "  served before on this inferencer: demo@v1",
      "published (newest job first):",
      "  VERSION  JOB    STATE      PUBLISHED",
      "  demo@v4  job-3  RUNNING    2026-11-27T23:45:00Z",
      "  demo@v3  job-3  RUNNING    2026-11-27T23:40:00Z",
      "  demo@v2  job-2  SUCCEEDED  2026-11-27T23:30:00Z",
      "  demo@v1  job-1  SUCCEEDED  2026-11-27T23:20:00Z",
      "",
    ]);

    const json = captureIo({ env });
    expect(await runCli(["models", "demo", "--json"], json)).toBe(0);
    const document = JSON.parse(json.stdoutText()) as { serving: { state: string; manifest: { model: { version: string } } }; published: { jobId: string; model: { version: string }; publishedAt: string }[] };
    expect(document.serving.state).toBe("SERVING_STATE_SERVING");
    expect(document.serving.manifest.model.version).toBe("v2");
    expect(document.published.map((p) => `${p.jobId}:${p.model.version}@${p.publishedAt}`)).toEqual([
      "job-3:v4@2026-11-27T23:45:00Z",
      "job-3:v3@2026-11-27T23:40:00Z",
      "job-2:v2@2026-11-27T23:30:00Z",
      "job-1:v1@2026-11-27T23:20:00Z",
    ]);
  });

  it("does not list the version serving now among those served before it (after a rollback)", async () => {
    const stub = await startServiceStub(InferenceService, {
      getServingModel: () => ({
        state: ServingState.SERVING,
        manifest: { model: { name: "demo", version: "v1" }, architecture: "lite" },
        // v1 served, then v2, then v1 again: the inferencer's history has both.
        previous: [{ name: "demo", version: "v2" }, { name: "demo", version: "v1" }],
      }),
    });
    cleanups.push(() => stub.stop());
    const trainer = await startFakeTrainer({ jobs: [] });
    cleanups.push(() => trainer.stop());
    const io = captureIo({ env: { POSELOOP_INFERENCER_ADDR: stub.address, POSELOOP_TRAINER_ADDR: trainer.address } });
    expect(await runCli(["models"], io)).toBe(0);
    expect(io.stdoutText()).toContain("\n  served before on this inferencer: demo@v2\n");
  });

  it("still shows the serving version when the trainer is down, with a note on stderr", async () => {
    const server = await inferencer();
    const trainer = await startFakeTrainer({});
    await trainer.stop();
    const io = captureIo({ env: { POSELOOP_INFERENCER_ADDR: server.address, POSELOOP_TRAINER_ADDR: trainer.address } });
    expect(await runCli(["models"], io)).toBe(0);
    expect(io.stdoutText()).toContain("version     demo@v2");
    expect(io.stderrText()).toMatch(/^poseloop: note: published versions not shown: the trainer at .* is unavailable/);
  });

  it("follows serving changes with --watch", async () => {
    const server = await inferencer();
    const io = captureIo({ env: { POSELOOP_INFERENCER_ADDR: server.address } });
    expect(await runCli(["models", "--watch"], io)).toBe(0);
    expect(io.stdoutText().trimEnd().split("\n").map((line) => line.trim())).toEqual([
      "SERVING: serving demo@v1",
      "loading demo@v2 (serving demo@v1 meanwhile)",
      "swapped: serving demo@v2",
    ]);
  });
});
