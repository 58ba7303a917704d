import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir } from "@poseloop/testkit";
import { createRgbImage, decodeImage, encodeJpeg } from "@poseloop/vision";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DecodedFrameCache } from "./frame-cache.js";

describe("DecodedFrameCache", () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeEach(async () => {
    dir = await makeTempDir("poseloop-frame-cache-");
  });
  afterEach(async () => {
    await dir.remove();
  });

  async function picture(name: string, width: number, height: number): Promise<string> {
    const image = createRgbImage(width, height, [200, 40, 90]);
    for (let i = 0; i < image.data.length; i++) image.data[i] = (i * 7) % 251;
    const path = join(dir.path, name);
    await writeFile(path, await encodeJpeg(image));
    return path;
  }

  it("hands out the decoder's own pixels as a raw RGB frame, and keeps them after the file is gone", async () => {
    const path = await picture("a.jpg", 32, 24);
    const expected = await decodeImage(await readFile(path));
    const cache = new DecodedFrameCache({ maxBytes: 1 << 20, maxPixels: 1 << 20 });
    const first = await cache.frame(path);
    expect(first).toMatchObject({ kind: "raw", width: 32, height: 24, format: "RGB8", stride: 96 });
    expect(first.data).toEqual(expected.data);
    expect(cache.bytes).toBe(32 * 24 * 3);
    await rm(path);
    expect(await cache.frame(path)).toBe(first);
  });

  it("keeps the first pictures that fit in its budget and passes the others on as their bytes", async () => {
    const a = await picture("a.jpg", 32, 24);
    const b = await picture("b.jpg", 32, 24);
    const cache = new DecodedFrameCache({ maxBytes: 32 * 24 * 3 + 100, maxPixels: 1 << 20 });
    expect((await cache.frame(a)).kind).toBe("raw");
    const second = await cache.frame(b);
    expect(second.kind).toBe("encoded");
    expect(cache.bytes).toBe(32 * 24 * 3);
    // The first stays cached; the second is read again on every call.
    expect((await cache.frame(a)).kind).toBe("raw");
    expect((await cache.frame(b)).kind).toBe("encoded");
  });

  it("does not keep a picture that fails to decode: the estimator gets its bytes and reports the failure", async () => {
    const path = join(dir.path, "broken.jpg");
    await writeFile(path, Buffer.from([0xff, 0xd8, 0xff, 0x00, 0x01, 0x02]));
    const cache = new DecodedFrameCache({ maxBytes: 1 << 20, maxPixels: 1 << 20 });
    const frame = await cache.frame(path);
    expect(frame.kind).toBe("encoded");
    expect(Array.from(frame.data)).toEqual([0xff, 0xd8, 0xff, 0x00, 0x01, 0x02]);
    expect(cache.bytes).toBe(0);
    // A picture over the pixel limit is left to the estimator the same way.
    const big = await picture("big.jpg", 64, 64);
    expect((await new DecodedFrameCache({ maxBytes: 1 << 20, maxPixels: 1000 }).frame(big)).kind).toBe("encoded");
  });
});
