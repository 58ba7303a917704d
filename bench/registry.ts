/**
 * Model registry throughput: a 64 MB artifact stored and read back (with SHA-256 verification) through
 * ModelRegistry, against the raw clients in the same run: nats.js's object store (putBlob/getBlob) for NATS,
 * and fs.writeFile/readFile for the embedded bus.
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Objm, StorageType } from "@nats-io/obj";
import { EmbeddedBus, ModelRegistry, NatsBus } from "@poseloop/bus";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { compareMs, fmt, printTable } from "./harness.js";

const SIZE = 64 * 1024 * 1024;
const REPS = 3;

export async function run(): Promise<void> {
  const data = randomBytes(SIZE);
  const mb = SIZE / (1024 * 1024);
  const server = await NatsServer.start();
  const dir = await makeTempDir("poseloop-bench-");
  const rows: string[][] = [];
  try {
    const bus = await NatsBus.connect({ servers: server.url });
    const registry = await ModelRegistry.open(bus);
    const raw = await new Objm(bus.connection).create("bench-raw", { storage: StorageType.File });
    let n = 0;
    await raw.putBlob({ name: "raw-0", options: { max_chunk_size: 512 * 1024 } }, data);
    const ours = await registry.putArtifact("bench/v0/model.onnx", data, Precision.FP32);
    const [ourPut, rawPut] = await compareMs(
      REPS,
      () => registry.putArtifact(`bench/v${++n}/model.onnx`, data, Precision.FP32),
      () => raw.putBlob({ name: `raw-${++n}`, options: { max_chunk_size: 512 * 1024 } }, data),
    );
    const [ourGet, rawGet] = await compareMs(
      REPS,
      () => registry.getArtifact("bench/v0/model.onnx", { expectedDigest: ours.digest }),
      () => raw.getBlob("raw-0"),
    );
    rows.push(["nats put", fmt(mb / (ourPut / 1000), 0), fmt(mb / (rawPut / 1000), 0), fmt(rawPut / ourPut)]);
    rows.push(["nats get+verify", fmt(mb / (ourGet / 1000), 0), fmt(mb / (rawGet / 1000), 0), fmt(rawGet / ourGet)]);
    await bus.close();

    const embedded = await ModelRegistry.open(await EmbeddedBus.open(join(dir.path, "bus")));
    await writeFile(join(dir.path, "raw-0"), data);
    const local = await embedded.putArtifact("bench/v0/model.onnx", data, Precision.FP32);
    const [embPut, fsPut] = await compareMs(
      REPS,
      () => embedded.putArtifact(`bench/v${++n}/model.onnx`, data, Precision.FP32),
      () => writeFile(join(dir.path, `raw-${++n}`), data),
    );
    const [embGet, fsGet] = await compareMs(
      REPS,
      () => embedded.getArtifact("bench/v0/model.onnx", { expectedDigest: local.digest }),
      () => readFile(join(dir.path, "raw-0")),
    );
    rows.push(["embedded put", fmt(mb / (embPut / 1000), 0), fmt(mb / (fsPut / 1000), 0), fmt(fsPut / embPut)]);
    rows.push(["embedded get+verify", fmt(mb / (embGet / 1000), 0), fmt(mb / (fsGet / 1000), 0), fmt(fsGet / embGet)]);
  } finally {
    await server.dispose();
    await dir.remove();
  }
  printTable(
    `registry: 64 MB artifact, median of ${REPS} alternated (peer: nats.js object store / fs.writeFile+readFile; PoseLoop also hashes, and fsyncs on the embedded bus)`,
    ["operation", "PoseLoop MB/s", "peer MB/s", "speed vs peer"],
    rows,
  );
}
