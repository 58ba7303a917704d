import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll } from "vitest";
import { EmbeddedBus } from "@poseloop/bus";
import { makeTempDir } from "@poseloop/testkit";
import { describeBusContract } from "./testing/bus-contract.js";

const dir = await makeTempDir("poseloop-embedded-bus-");
afterAll(() => dir.remove());

describeBusContract("embedded", () => ({
  connect: () => EmbeddedBus.open(dir.path),
  async corruptBlob(bucket, name) {
    const index = JSON.parse(
      await readFile(join(dir.path, "blobs", bucket, "names", `${encodeURIComponent(name).replaceAll(".", "%2E")}.json`), "utf8"),
    ) as { digest: string };
    const handle = await open(join(dir.path, "blobs", bucket, "data", index.digest.slice("sha256:".length)), "r+");
    try {
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, 1000);
      byte[0] = (byte[0] ?? 0) ^ 0xff;
      await handle.write(byte, 0, 1, 1000);
    } finally {
      await handle.close();
    }
  },
}));
