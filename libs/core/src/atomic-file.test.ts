import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AtomicFile, writeFileAtomic } from "./atomic-file.js";

const scratch = await mkdtemp(join(tmpdir(), "poseloop-atomic-"));
afterAll(() => rm(scratch, { recursive: true, force: true }));

describe("writeFileAtomic", () => {
  it("writes a new file and replaces an old one whole, leaving nothing else in the folder", async () => {
    const path = join(scratch, "model.onnx");
    await writeFileAtomic(path, Uint8Array.of(1, 2, 3));
    expect([...(await readFile(path))]).toEqual([1, 2, 3]);
    await writeFile(path, "old");
    await writeFileAtomic(path, Uint8Array.of(9));
    expect([...(await readFile(path))]).toEqual([9]);
    expect(await readdir(scratch)).toEqual(["model.onnx"]);
  });

  it("fails without leaving a temporary file when the target cannot be written", async () => {
    const dir = join(scratch, "target-is-a-folder");
    await writeFileAtomic(join(scratch, "keep"), Uint8Array.of(1));
    await expect(writeFileAtomic(join(scratch, "missing", "x.bin"), Uint8Array.of(1))).rejects.toThrow(/ENOENT/);
    await import("node:fs/promises").then((fs) => fs.mkdir(join(dir, "x.bin"), { recursive: true }));
    await expect(writeFileAtomic(join(dir, "x.bin"), Uint8Array.of(1))).rejects.toThrow();
    expect(await readdir(dir)).toEqual(["x.bin"]);
  });

  it("writes text and sets the modification time it is given", async () => {
    const folder = join(scratch, "text");
    await mkdir(folder);
    const mtime = new Date("2030-01-01T00:00:00Z");
    await writeFileAtomic(join(folder, "job.json"), '{"id":"a"}', { mtime });
    expect(await readFile(join(folder, "job.json"), "utf8")).toBe('{"id":"a"}');
    expect((await stat(join(folder, "job.json"))).mtimeMs).toBe(mtime.getTime());
    expect(await readdir(folder)).toEqual(["job.json"]);
  });
});

describe("AtomicFile", () => {
  it("streams content whose destination is known only at the end, or leaves nothing when discarded", async () => {
    const folder = join(scratch, "blobs");
    await mkdir(folder);
    const file = await AtomicFile.create(folder, "upload");
    await file.write(Uint8Array.of(1, 2));
    await file.write(Uint8Array.of(3));
    expect(await readdir(folder)).toHaveLength(1);
    await file.commit(join(folder, "digest-123"));
    expect([...(await readFile(join(folder, "digest-123")))]).toEqual([1, 2, 3]);
    const dropped = await AtomicFile.create(folder, "upload");
    await dropped.write("partial");
    await dropped.discard();
    expect(await readdir(folder)).toEqual(["digest-123"]);
  });

  it("refuses a destination outside the folder it was created in", async () => {
    const folder = join(scratch, "elsewhere");
    await mkdir(folder);
    const file = await AtomicFile.create(folder, "x");
    await expect(file.commit(join(scratch, "x"))).rejects.toThrow(/cannot be committed/);
    expect(await readdir(folder)).toEqual([]);
  });
});
