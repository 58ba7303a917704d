import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { ffmpegPath, VideoFrameReader, VideoFrameWriter } from "./ffmpeg-video.js";

const ffmpeg = ffmpegPath({});
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function tempDir(): Promise<string> {
  const dir = await makeTempDir("poseloop-client-");
  cleanups.push(dir.remove);
  return dir.path;
}

/** A frame filled with one colour per quadrant, different for each frame index. */
function frame(width: number, height: number, index: number): Uint8Array {
  const data = new Uint8Array(width * height * 3);
  const palette = [
    [200, 30, 30],
    [30, 200, 30],
    [30, 30, 200],
    [220, 220, 40],
  ];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const quadrant = (Number(x >= width / 2) + 2 * Number(y >= height / 2) + index) % 4;
      data.set(palette[quadrant]!, 3 * (y * width + x));
    }
  }
  return data;
}

function meanAbsoluteError(a: Uint8Array, b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

describe("ffmpeg video round trip", () => {
  it("encodes RGB frames to an H.264 MP4 and decodes the same frames back", async () => {
    const path = join(await tempDir(), "clip.mp4");
    const [width, height, count] = [64, 48, 6];
    const writer = new VideoFrameWriter(ffmpeg, { output: path, width, height, fps: 10, container: "h264" });
    for (let i = 0; i < count; i++) await writer.write(frame(width, height, i));
    await writer.finish();

    const reader = await VideoFrameReader.open(ffmpeg, { input: path });
    cleanups.push(() => reader.close());
    expect(reader.info).toEqual({ width, height, fps: 10, durationSeconds: count / 10 });
    const decoded: Uint8Array[] = [];
    for await (const data of reader.frames()) decoded.push(data);
    expect(decoded).toHaveLength(count);
    // H.264 at CRF 20 with 4:2:0 chroma is lossy, but flat quadrants come back close.
    decoded.forEach((data, i) => expect(meanAbsoluteError(data, frame(width, height, i))).toBeLessThan(12));
  });

  it("scales, resamples and cuts while decoding", async () => {
    const path = join(await tempDir(), "clip.mp4");
    const writer = new VideoFrameWriter(ffmpeg, { output: path, width: 64, height: 48, fps: 10, container: "h264" });
    for (let i = 0; i < 10; i++) await writer.write(frame(64, 48, i));
    await writer.finish();
    const reader = await VideoFrameReader.open(ffmpeg, { input: path, width: 32, maxFrames: 3 });
    cleanups.push(() => reader.close());
    expect(reader.info).toMatchObject({ width: 32, height: 24 });
    let frames = 0;
    for await (const data of reader.frames()) {
      expect(data.length).toBe(32 * 24 * 3);
      frames++;
    }
    expect(frames).toBe(3);
  });

  it("writes an animated GIF of odd size", async () => {
    const dir = await tempDir();
    const path = join(dir, "clip.gif");
    const writer = new VideoFrameWriter(ffmpeg, { output: path, width: 33, height: 25, fps: 5, container: "gif" });
    for (let i = 0; i < 4; i++) await writer.write(frame(33, 25, i));
    await writer.finish();
    const reader = await VideoFrameReader.open(ffmpeg, { input: path });
    cleanups.push(() => reader.close());
    expect(reader.info).toMatchObject({ width: 33, height: 25 });
    let frames = 0;
    for await (const _ of reader.frames()) frames++;
    expect(frames).toBe(4);
  });

  it("fails with ffmpeg's reason for a file that is not a video", async () => {
    const path = join(await tempDir(), "notes.mp4");
    await writeFile(path, "not a video");
    const error = await VideoFrameReader.open(ffmpeg, { input: path }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).message).toMatch(/ffmpeg cannot read .*notes\.mp4: .*Invalid data/);
  });

  it("refuses frames of the wrong size and reports a missing ffmpeg clearly", async () => {
    const writer = new VideoFrameWriter(ffmpeg, { output: join(await tempDir(), "x.mp4"), width: 8, height: 8, fps: 1, container: "h264" });
    await expect(writer.write(new Uint8Array(10))).rejects.toThrow("a 8x8 frame has 192 bytes, got 10");
    await writer.abort();
    const missing = await VideoFrameReader.open("/nonexistent/ffmpeg", { input: "x.mp4" }).catch((e: unknown) => e);
    expect(AppError.is(missing, Code.FAILED_PRECONDITION)).toBe(true);
    expect((missing as AppError).message).toBe("ffmpeg not found at /nonexistent/ffmpeg (set POSELOOP_FFMPEG)");
  });
});
