import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { renderSyntheticScene, SeededRandom, syntheticClip } from "@poseloop/data";
import { makeTempDir, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { decodeImage, encodeJpeg } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { InferenceClient } from "@poseloop/client";
import { captureIo } from "../testing/capture-io.js";
import { TestModelPublisher } from "../testing/test-model-publisher.js";
import { ffmpegPath, VideoFrameReader, VideoFrameWriter } from "./ffmpeg-video.js";
import { runCli } from "./run-cli.js";

// The inferencer runs as its own process, the way the CLI meets it in production (a library does not import
// a service); models reach it through the test NATS server's registry.
const INFERENCER_MAIN = fileURLToPath(new URL("../../../../services/inferencer/src/main.ts", import.meta.url));
const natsUrl = inject("natsUrl");
const model = `client-cli-${process.pid}`;

let inferencer: ServiceProcess;
let publisher: TestModelPublisher;
let dir: { path: string; remove: () => Promise<void> };
let env: Record<string, string>;
let v1: string;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-client-int-");
  publisher = await TestModelPublisher.connect(natsUrl);
  inferencer = await spawnService(INFERENCER_MAIN, {
    POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
    POSELOOP_NATS_URL: natsUrl,
    POSELOOP_MODEL: model,
    POSELOOP_LOG_LEVEL: "info",
    POSELOOP_INSTANCE_ID: `client-int-${process.pid}`,
  }, 60_000);
  // Nothing but the trainer's default port is assumed closed: point the CLI at a port nobody listens on.
  env = { POSELOOP_INFERENCER_ADDR: `127.0.0.1:${inferencer.port}`, POSELOOP_TRAINER_ADDR: "127.0.0.1:1" };
  v1 = await publisher.publish(model, 1);
  const client = new InferenceClient({ address: env["POSELOOP_INFERENCER_ADDR"]! });
  try {
    await waitFor(async () => (await client.getServingModel()).manifest?.model?.version === v1, { timeoutMs: 30_000, what: `${model}@${v1} serving` });
  } finally {
    client.close();
  }
});

afterAll(async () => {
  await inferencer?.stop();
  await publisher?.close();
  await dir?.remove();
});

describe("poseloop against a real inferencer", () => {
  it("models: shows the version serving, and notes that the trainer is not there", async () => {
    const io = captureIo({ env });
    expect(await runCli(["models"], io)).toBe(0);
    expect(io.stdoutText()).toContain(`model ${model} on the inferencer at ${env["POSELOOP_INFERENCER_ADDR"]}: SERVING`);
    expect(io.stdoutText()).toContain(`version     ${model}@${v1} (fp32, lite`);
    expect(io.stderrText()).toMatch(/^poseloop: note: published versions not shown: the trainer at 127\.0\.0\.1:1 is unavailable/);
  });

  it("detect: finds 17 keypoints of the person in a JPEG and draws them", async () => {
    const scene = renderSyntheticScene(new SeededRandom(5), { width: 160, height: 120, minPeople: 1, maxPeople: 1 });
    await writeFile(join(dir.path, "person.jpg"), await encodeJpeg(scene.image, 90));
    const io = captureIo({ env, cwd: dir.path });
    expect(await runCli(["detect", "person.jpg", "--json", "--out", "person-annotated.png"], io)).toBe(0);
    const result = JSON.parse(io.stdoutText()) as { model: { name: string; version: string }; imageWidth: number; persons: { keypoints: { x: number; y: number }[] }[] };
    expect(result.model).toMatchObject({ name: model, version: v1 });
    expect(result.imageWidth).toBe(160);
    expect(result.persons).toHaveLength(1);
    expect(result.persons[0]?.keypoints).toHaveLength(17);
    const annotated = await decodeImage(await readFile(join(dir.path, "person-annotated.png")));
    expect([annotated.width, annotated.height]).toEqual([160, 120]);

    // With --box, each box is one person, cropped and answered in its own place.
    const [x, y, w, h] = scene.people[0]!.bbox;
    const boxed = captureIo({ env, cwd: dir.path });
    expect(await runCli(["detect", "person.jpg", "--json", "--box", `${x},${y},${w},${h}`, "--box", "100,10,40,90"], boxed)).toBe(0);
    const two = JSON.parse(boxed.stdoutText()) as { persons: { bbox: { x: number; y: number; width: number; height: number }; keypoints: { x: number; y: number }[] }[] };
    expect(two.persons).toHaveLength(2);
    const boxes = two.persons.map((person) => [person.bbox.x, person.bbox.y, person.bbox.width, person.bbox.height].map((v) => Math.round(v * 100) / 100));
    expect(boxes).toContainEqual([x, y, w, h].map((v) => Math.round(v * 100) / 100));
    expect(boxes).toContainEqual([100, 10, 40, 90]);
    const second = two.persons.find((person) => Math.round(person.bbox.x) === 100)!;
    // Its keypoints lie in its crop (the box padded by 1.25 to the model's 3:4: x 78..162, y -1..111) give or
    // take a heatmap pixel and a quarter (8.75 px here): an empty heatmap peaks at its border, shifted outward.
    expect(second.keypoints.every((k) => k.x >= 69 && k.x <= 171 && k.y >= -10 && k.y <= 120), JSON.stringify(second.keypoints)).toBe(true);
  });

  it("stream --synthetic: answers every frame in order and shows the hot swap to a new version in the video", async () => {
    const io = captureIo({ env, cwd: dir.path });
    const run = runCli(["stream", "--synthetic", "--frames", "40", "--width", "160", "--height", "120", "--fps", "10", "--realtime", "--json", "--out", "swap.mp4"], io);
    await waitFor(() => io.stdoutText().split("\n").filter((line) => line.includes('"type":"result"')).length >= 5, { timeoutMs: 20_000, what: "5 results" });
    const v2 = await publisher.publish(model, 2);
    const code = await run;
    expect(io.stderrText()).toBe("");
    expect(code).toBe(0);
    const lines = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; frame?: number; from?: string; to?: string; models?: { model: string }[]; dropped?: number });
    const frames = lines.filter((line) => line.type === "result").map((line) => line.frame);
    expect(frames).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const swap = lines.find((line) => line.type === "model_switch");
    expect(swap).toMatchObject({ from: `${model}@${v1}`, to: `${model}@${v2}` });
    const summary = lines.at(-1)!;
    expect(summary).toMatchObject({ type: "summary", dropped: 0 });
    expect(summary.models?.map((span) => span.model)).toEqual([`${model}@${v1}`, `${model}@${v2}`]);

    const reader = await VideoFrameReader.open(ffmpegPath({}), { input: join(dir.path, "swap.mp4") });
    let written = 0;
    for await (const _ of reader.frames()) written++;
    await reader.close();
    expect(written).toBe(40);
  });

  it("stream VIDEO --boxes FILE --track: the file's boxes are the people, each keeping its track id; a scene cut restarts them", async () => {
    // The synthetic clip as an H.264 video, and its ground-truth boxes as the boxes file (frames counted from 1).
    const clip = [...syntheticClip({ width: 192, height: 144, frames: 30, seed: 3, sceneCutAt: 20 })];
    const writer = new VideoFrameWriter(ffmpegPath({}), { output: join(dir.path, "clip.mp4"), width: 192, height: 144, fps: 10, container: "h264" });
    for (const frame of clip) await writer.write(frame.image.data);
    await writer.finish();
    const lines = clip.map((frame) => JSON.stringify({ frame: frame.index + 1, boxes: frame.people.map((p) => p.bbox) }));
    await writeFile(join(dir.path, "boxes.jsonl"), lines.join("\n") + "\n");
    const io = captureIo({ env, cwd: dir.path });
    expect(await runCli(["stream", "clip.mp4", "--boxes", "boxes.jsonl", "--track", "--smooth", "--json", "--out", "tracked.mp4"], io)).toBe(0);
    type Result = { type: string; frame: number; result: { persons?: { bbox: { x: number; y: number; width: number; height: number }; trackId?: number }[] } };
    const results = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as Result).filter((line) => line.type === "result");
    expect(results).toHaveLength(30);
    const last = new Map<number, number>();
    let switches = 0;
    const before = new Set<number>();
    const after = new Set<number>();
    for (const { frame, result } of results) {
      const truth = clip[frame - 1]!;
      expect(result.persons ?? []).toHaveLength(truth.people.length);
      for (const person of truth.people) {
        const [x, y, w, h] = person.bbox;
        const match = result.persons?.find((p) => p.bbox.x === x && p.bbox.y === y && p.bbox.width === w && p.bbox.height === h);
        expect(match?.trackId, `frame ${frame}: identity ${person.identity}`).toBeGreaterThan(0);
        const id = match?.trackId ?? 0;
        if (person.identity <= 2 && last.has(person.identity) && last.get(person.identity) !== id) switches++;
        last.set(person.identity, id);
        (frame <= 20 ? before : after).add(id);
      }
    }
    // The two people who cross each other keep their ids (tracking.int.test.ts counts the rest of the clip).
    expect(switches).toBeLessThanOrEqual(1);
    expect([...after].filter((id) => before.has(id))).toEqual([]);

    const bad = captureIo({ env, cwd: dir.path });
    await writeFile(join(dir.path, "bad.jsonl"), '{"frame": 1, "boxes": [[0, 0, 10]]}\n{"frame": 1}\n');
    expect(await runCli(["stream", "clip.mp4", "--boxes", "bad.jsonl"], bad)).toBe(1);
    expect(bad.stderrText()).toContain("line 1: box 0 must be [x, y, w, h]");
    expect(bad.stderrText()).toContain("line 2: frame 1 again");
  });

  it("stream tcp://…: a live source is read at its pace, newest frame first, until Ctrl-C", async () => {
    // ffmpeg serves the clip the test above wrote over TCP as a live MPEG-TS stream (no duration), in real time, looping.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port: free } = probe.address() as { port: number };
        probe.close(() => resolve(free));
      });
    });
    const sender = spawn(ffmpegPath({}), ["-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", join(dir.path, "clip.mp4"), "-c", "copy", "-f", "mpegts", `tcp://127.0.0.1:${port}?listen=1`], { stdio: "ignore" });
    try {
      const controller = new AbortController();
      const io = captureIo({ env, cwd: dir.path, signal: controller.signal });
      let run: Promise<number> | undefined;
      await waitFor(
        async () => {
          // The sender may not listen yet: retry until the CLI connects.
          if (run !== undefined && io.stdoutText().includes('"type":"accepted"')) return true;
          if (run !== undefined && (await Promise.race([run, Promise.resolve(undefined)])) === undefined) return false;
          run = runCli(["stream", `tcp://127.0.0.1:${port}`, "--track", "--json"], io);
          return false;
        },
        { timeoutMs: 20_000, intervalMs: 300, what: "the CLI streaming from the live source" },
      );
      await waitFor(() => io.stdoutText().split("\n").filter((line) => line.includes('"type":"result"')).length >= 5, { timeoutMs: 20_000, what: "5 results" });
      controller.abort();
      expect(await run).toBe(130);
      const lines = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; accepted?: { options?: { delivery?: string } } });
      expect(lines[0]?.accepted?.options?.delivery).toBe("DELIVERY_MODE_LATEST_FRAME_WINS");
      expect(lines.at(-1)?.type).toBe("summary");
      expect(io.stderrText()).toMatch(/interrupted after \d+ frames/);
    } finally {
      sender.kill("SIGKILL");
    }
  });
});
