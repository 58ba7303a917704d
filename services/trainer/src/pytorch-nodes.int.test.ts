import { NatsBus, type Bus } from "@poseloop/bus";
import { TrainingEngine, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { childProcesses, makeTempDir, NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobCheckpointStore } from "./jobs/checkpoint-store.js";
import { decodeCheckpoint } from "./runner/checkpoint-file.js";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// A job over two nodes (TRAIN.NODES: 2), each node a trainer: here two trainers of this process stand for two
// machines, with gloo on the CPU. The trainer that takes the job runs node 0 and hosts the rendezvous; the
// other takes the queued node 1 and runs its torchrun. Two processes over two nodes are the same data-parallel
// run as two processes on one node (TRAIN.GPUS: 2), so the two end with the same weights.
const nats = await NatsServer.start();
let dir: { path: string; remove: () => Promise<void> };
let a: TrainerHarness;
let b: TrainerHarness;
let observer: Bus;
let store: BlobCheckpointStore;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-torch-nodes-");
  const env = { POSELOOP_RDZV_HOST: "127.0.0.1", POSELOOP_JOB_ACK_WAIT: "3s" };
  [a, b] = await Promise.all([startTrainerHarness(nats.url, dir.path, { ...env, POSELOOP_WORKER_ID: "node-a" }), startTrainerHarness(nats.url, dir.path, { ...env, POSELOOP_WORKER_ID: "node-b" })]);
  observer = await NatsBus.connect({ servers: nats.url, name: "torch-nodes-observer" });
  store = await BlobCheckpointStore.open(observer);
}, 90_000);

afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await observer?.close();
  await nats.dispose();
  await dir?.remove();
});

function config(modelName: string, placement: { nodes?: number; gpus?: number }): TrainConfig {
  return tinyTrainConfig({ engine: TrainingEngine.PYTORCH, endEpoch: 1, schedule: { kind: 1 }, optimizer: { kind: 1, lr: 0.01, momentum: 0.9 }, batchSize: 4, publish: { modelName }, ...placement });
}

async function run(value: TrainConfig): Promise<{ state: Buffer; engines: string[]; workerId: string }> {
  const { job } = await a.client.startTraining({ source: { case: "config", value } });
  const jobId = job?.jobId ?? "";
  const events = await jobEvents(a.client, jobId, { timeoutMs: 180_000 });
  const end = events.at(-1)?.event;
  expect(end?.case === "stateChanged" && end.value.to, end?.case === "stateChanged" ? end.value.reason : "").toBe(JobState.SUCCEEDED);
  const engines = [...new Set(events.flatMap((e) => (e.event.case === "progress" ? [e.event.value.engine] : [])))];
  const { checkpoints } = await a.client.listCheckpoints({ jobId });
  const last = checkpoints.at(-1);
  const { job: done } = await a.client.getJob({ jobId });
  return { state: Buffer.from(decodeCheckpoint(await store.get(last?.location ?? "", last?.digest ?? "")).state), engines, workerId: done?.workerId ?? "" };
}

describe("TRAIN.NODES: 2", () => {
  it("trains over two trainers' nodes, ends like two processes on one node, and leaves no process behind", async () => {
    const twoNodes = await run(config("torch-nodes", { nodes: 2 }));
    expect(twoNodes.engines).toEqual([expect.stringMatching(/^pytorch \S+ on cpu, 2 processes \(DDP\)$/) as string]);
    await waitFor(() => childProcesses(process.pid, "poseloop_torch").length === 0, { timeoutMs: 15_000, what: "every node's processes gone" });
    const oneNode = await run(config("torch-one-node", { gpus: 2 }));
    expect(Buffer.compare(twoNodes.state, oneNode.state)).toBe(0);
  });
});
