import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir } from "@poseloop/testkit";
import { createRgbImage } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecodedImageStore, imageLabel } from "./decoded-image-store.js";
import { sameBytes, texturedImage, writePng } from "./testing/pose-fixtures.js";

describe("DecodedImageStore", () => {
  let temp: { path: string; remove: () => Promise<void> };
  let paths: string[];
  beforeAll(async () => {
    temp = await makeTempDir("poseloop-images-");
    // 40 x 30 RGB: 3600 bytes decoded each.
    paths = await Promise.all([0, 1, 2].map((i) => writePng(temp.path, `${i}.png`, texturedImage(40, 30))));
  });
  afterAll(async () => {
    await temp.remove();
  });

  it("keeps the most recently used images within its memory budget and decodes each once when asked at once", async () => {
    const store = new DecodedImageStore({ memoryBytes: 2 * 3600 });
    const [a, b] = await Promise.all([store.get(paths[0]!, "a"), store.get(paths[0]!, "a")]);
    expect(a).toBe(b);
    expect(store.stats.decoded).toBe(1);
    await store.get(paths[1]!, "b");
    await store.get(paths[0]!, "a"); // now 1 is the least recently used
    await store.get(paths[2]!, "c"); // evicts 1
    expect(store.stats).toMatchObject({ decoded: 3, memoryHits: 1 });
    await store.get(paths[0]!, "a");
    await store.get(paths[1]!, "b");
    expect(store.stats).toMatchObject({ decoded: 4, memoryHits: 2 });
  });

  it("decodes an image again once its file changes, and rewrites a damaged cache file", async () => {
    const diskDir = join(temp.path, "cache");
    const path = await writePng(temp.path, "edited.png", texturedImage(40, 30));
    const before = await new DecodedImageStore({ memoryBytes: 0, diskDir }).get(path, "edited");
    const cached = new DecodedImageStore({ memoryBytes: 0, diskDir });
    expect(sameBytes((await cached.get(path, "edited")).data, before.data)).toBe(true);
    expect(cached.stats).toMatchObject({ diskHits: 1, decoded: 0 });

    await writePng(temp.path, "edited.png", createRgbImage(50, 20, [9, 9, 9]));
    const after = await cached.get(path, "edited");
    expect([after.width, after.height, after.data[0]]).toEqual([50, 20, 9]);
    expect(cached.stats.decoded).toBe(1);

    const folders = await readdir(diskDir);
    for (const folder of folders) for (const file of await readdir(join(diskDir, folder))) await writeFile(join(diskDir, folder, file), "damaged");
    const repaired = new DecodedImageStore({ memoryBytes: 0, diskDir });
    expect(sameBytes((await repaired.get(path, "edited")).data, after.data)).toBe(true);
    expect(repaired.stats).toMatchObject({ diskHits: 0, decoded: 1 });
    expect((await new DecodedImageStore({ memoryBytes: 0, diskDir }).get(path, "edited")).width).toBe(50);
  });

  it("names a missing image with its id and file, never its whole path", async () => {
    const path = join(temp.path, "nowhere", "x.jpg");
    for (const diskDir of [undefined, join(temp.path, "cache")]) {
      const error: unknown = await new DecodedImageStore(diskDir === undefined ? {} : { diskDir }).get(path, imageLabel(4, path)).catch((e: unknown) => e);
      expect(AppError.is(error, Code.NOT_FOUND)).toBe(true);
      expect((error as AppError).message).toBe("image 4 (nowhere/x.jpg) not found");
    }
  });
});
