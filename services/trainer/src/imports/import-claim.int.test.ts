import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TrainerClient } from "@poseloop/client";
import { ModelRegistry, openBus, type Bus, type KeyValueStore } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, startTrainer, type TrainerProcess } from "../index.js";
import { ClaimSightings, ImportClaim, IMPORTS_BUCKET, LostClaimError } from "./import-claim.js";

// An import asked of two trainers at once (a client's retry that reaches another trainer, two clients) is
// published once, over a real nats-server with two real trainers and the real import check; and the claim that
// ensures it waits for a live holder, takes over from a dead one, and stops a holder that lost it from publishing.

const DETECTOR_DIR = fileURLToPath(new URL("../../../../models/person-detector/", import.meta.url));

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let nats: NatsServer;
let bus: Bus;
let kv: KeyValueStore;
const trainers: TrainerProcess[] = [];
const clients: TrainerClient[] = [];

beforeAll(async () => {
  dir = await makeTempDir("poseloop-import-claim-");
  nats = await NatsServer.start();
  for (const id of ["t1", "t2"]) {
    const trainer = await startTrainer(
      loadConfig({
        POSELOOP_NATS_URL: nats.url,
        POSELOOP_LOG_LEVEL: "error",
        POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
        POSELOOP_WORKER_ID: id,
        POSELOOP_DATA_ROOT: join(dir.path, "data"),
        POSELOOP_WORK_DIR: join(dir.path, `work-${id}`),
        POSELOOP_MAX_CONCURRENT_JOBS: "0",
        POSELOOP_PYTHON: "/bin/false",
      }),
      silentLogger,
    );
    trainers.push(trainer);
    clients.push(new TrainerClient({ address: `127.0.0.1:${trainer.address.port}` }));
  }
  bus = await openBus({ natsServers: [nats.url], embeddedDir: "" });
  kv = await bus.keyValueStore(IMPORTS_BUCKET, { history: 1 });
}, 60_000);

afterAll(async () => {
  for (const client of clients) client.close();
  await bus?.close();
  await Promise.all(trainers.map((trainer) => trainer.stop()));
  await nats?.dispose();
  await dir?.remove();
});

describe("ImportModel on two trainers at once", () => {
  it("publishes one version, and both answers name it", async () => {
    const model = new Uint8Array(await readFile(join(DETECTOR_DIR, "model.int8.onnx")));
    const manifestYaml = await readFile(join(DETECTOR_DIR, "manifest.yaml"), "utf8");
    const answers = await Promise.all(clients.map((client) => client.importModel({ modelName: "raced-detector", model, manifestYaml })));
    const registry = await ModelRegistry.open(bus, silentLogger);
    const versions = await registry.listVersions("raced-detector");
    expect(versions).toHaveLength(1);
    expect(answers.map((a) => a.manifest?.model?.version)).toEqual([versions[0], versions[0]]);
    expect(answers.map((a) => a.alreadyImported).sort()).toEqual([false, true]);
    // A third request, on either trainer, is the same import again.
    const again = await clients[1]?.importModel({ modelName: "raced-detector", model, manifestYaml });
    expect(again?.alreadyImported).toBe(true);
    expect(await registry.listVersions("raced-detector")).toEqual(versions);
  }, 120_000);
});

describe("ImportClaim", () => {
  const options = (holder: string, staleMs: number, signal = AbortSignal.timeout(30_000), sightings = new ClaimSightings()) => ({ holder, staleMs, sightings, logger: silentLogger, signal });

  it("makes a second trainer wait while the holder is alive, then gives it the claim when released", async () => {
    const held = await ImportClaim.acquire(kv, "alive", options("t1", 600));
    let second: ImportClaim | undefined;
    const waiting = ImportClaim.acquire(kv, "alive", options("t2", 600)).then((claim) => (second = claim));
    // Three stale times: the holder's heartbeat keeps its claim.
    await new Promise((resolve) => setTimeout(resolve, 1_800));
    expect(second).toBeUndefined();
    await held.confirm();
    await held.release("done");
    await waiting;
    expect(second).toBeDefined();
    await second?.release("done");
  });

  it("takes over a claim nobody has written for the stale time (its trainer died)", async () => {
    await kv.put("abandoned", new TextEncoder().encode(JSON.stringify({ state: "importing", holder: "gone", token: "x" })));
    const started = Date.now();
    const claim = await ImportClaim.acquire(kv, "abandoned", options("t2", 500));
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    await claim.confirm();
    await claim.release("done");
    // Released: the next request takes it at once.
    const next = await ImportClaim.acquire(kv, "abandoned", options("t1", 60_000));
    await next.release("failed");
  });

  it("counts a dead holder's silence across requests that each gave up waiting before the stale time", async () => {
    await kv.put("given-up", new TextEncoder().encode(JSON.stringify({ state: "importing", holder: "gone", token: "x" })));
    const sightings = new ClaimSightings();
    // Requests whose deadlines (300 ms) end before the stale time (500 ms): the first gives up, the second takes
    // over, 500 ms after the first one saw the claim (were each to count from zero, every one would give up).
    await expect(ImportClaim.acquire(kv, "given-up", options("t2", 500, AbortSignal.timeout(300), sightings))).rejects.toThrow();
    const claim = await ImportClaim.acquire(kv, "given-up", options("t2", 500, AbortSignal.timeout(300), sightings));
    await claim.release("done");
  });

  it("keeps its claim when a renewal landed but its answer was lost", async () => {
    const claim = await ImportClaim.acquire(kv, "lost-answer", options("t1", 60_000));
    // The claim's own value written again behind its back: the revision it knows is now stale, the token its own.
    const entry = await kv.get("lost-answer");
    await kv.put("lost-answer", entry?.value ?? new Uint8Array());
    await claim.confirm();
    expect(JSON.parse(new TextDecoder().decode((await kv.get("lost-answer"))?.value))).toMatchObject({ state: "publishing", holder: "t1" });
    await claim.release("done");
  });

  it("refuses to let a holder publish once another trainer took its claim over", async () => {
    const slow = await ImportClaim.acquire(kv, "lost", options("t1", 60_000));
    const entry = await kv.get("lost");
    await kv.update("lost", new TextEncoder().encode(JSON.stringify({ state: "importing", holder: "t2", token: "t2's" })), entry?.revision ?? 0);
    await expect(slow.confirm()).rejects.toBeInstanceOf(LostClaimError);
    // Its release leaves the new holder's claim as it is.
    await slow.release("failed");
    expect(JSON.parse(new TextDecoder().decode((await kv.get("lost"))?.value))).toEqual({ state: "importing", holder: "t2", token: "t2's" });
  });
});
