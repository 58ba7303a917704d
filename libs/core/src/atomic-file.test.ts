import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { writeFileAtomic } from "./atomic-file.js";

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
});
