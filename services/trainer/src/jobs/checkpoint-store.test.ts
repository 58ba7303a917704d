import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openBus } from "@poseloop/bus";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobCheckpointStore, DirectoryCheckpointStore, type CheckpointStore } from "./checkpoint-store.js";

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => {
  dir = await makeTempDir("poseloop-checkpoints-");
});
afterAll(() => dir?.remove());

async function code(promise: Promise<unknown>): Promise<Code | undefined> {
  return promise.then(
    () => undefined,
    (error: unknown) => (error instanceof AppError ? error.code : Code.UNKNOWN),
  );
}

const stores: [string, () => Promise<CheckpointStore>][] = [
  ["DirectoryCheckpointStore", async () => new DirectoryCheckpointStore(join(dir.path, "shared"))],
  ["BlobCheckpointStore on the embedded bus", async () => BlobCheckpointStore.open(await openBus({ natsServers: [], embeddedDir: join(dir.path, "bus") }))],
];

describe.each(stores)("%s", (_name, open) => {
  it("gives back exactly what it stored, verified by digest, until it is deleted", async () => {
    const store = await open();
    const bytes = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 31) % 251);
    const stored = await store.put("job-1", "e0001-s0000010", bytes);
    expect(stored.sizeBytes).toBe(bytes.byteLength);
    expect(stored.digest).toMatch(/^sha256:[0-9a-f]{64}$|^[0-9a-f]{64}$/);
    expect(new Uint8Array(await store.get(stored.location, stored.digest))).toEqual(bytes);
    expect(await code(store.get(stored.location, stored.digest.replace(/.$/, (c) => (c === "0" ? "1" : "0"))))).toBe(Code.DATA_LOSS);
    await store.delete(stored.location);
    expect(await code(store.get(stored.location, stored.digest))).toBe(Code.NOT_FOUND);
  });

  it("keeps the files of two attempts at the same checkpoint apart: a stale owner cannot spoil the current one's", async () => {
    const store = await open();
    const current = await store.put("job-3", "e0001-s0000010", Uint8Array.of(1, 2, 3), 2);
    const stale = await store.put("job-3", "e0001-s0000010", Uint8Array.of(9, 9, 9), 1);
    expect(stale.location).not.toBe(current.location);
    expect(new Uint8Array(await store.get(current.location, current.digest))).toEqual(Uint8Array.of(1, 2, 3));
  });
});

describe("DirectoryCheckpointStore", () => {
  it("finds a file changed on disk corrupt, leaves no temporary files, and refuses locations outside its folder", async () => {
    const root = join(dir.path, "guarded");
    const store = new DirectoryCheckpointStore(root);
    const stored = await store.put("job-2", "e0002-s0000020", Uint8Array.of(1, 2, 3, 4));
    expect(await readdir(join(root, "job-2"))).toEqual(["e0002-s0000020.ckpt"]);
    await writeFile(join(root, stored.location), Uint8Array.of(1, 2, 3, 5));
    expect(await code(store.get(stored.location, stored.digest))).toBe(Code.DATA_LOSS);
    for (const location of ["../outside.ckpt", "/etc/passwd", "job-2/../../guarded-sibling/x.ckpt"]) {
      expect(await code(store.get(location, stored.digest))).toBe(Code.PERMISSION_DENIED);
      expect(await code(store.delete(location))).toBe(Code.PERMISSION_DENIED);
    }
  });
});
