import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { createClient } from "@poseloop/grpc";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer, spawnService, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

// The attacks of issue 23, against the real service processes: an anonymous PublishCheckpoint that switched
// the serving model, an inferencer anyone could query, a NATS password printed in the logs.
const TRAINER = "services/trainer/src/main.ts";
const INFERENCER = "services/inferencer/src/main.ts";
const NATS_PASSWORD = "hunter2-nats-secret";
const TRAIN_TOKEN = "train-token-0123456789";
const STREAM_TOKEN = "stream-token-0123456789";

const running: ServiceProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((service) => service.stop("SIGKILL")));
});

async function start(entry: string, env: Record<string, string>): Promise<ServiceProcess> {
  const service = await spawnService(entry, { POSELOOP_DRAIN_TIMEOUT: "2s", ...env }, 90_000);
  running.push(service);
  return service;
}

const outcome = (promise: Promise<unknown>) =>
  promise.then(() => "ok", (error: unknown) => `${AppError.from(error).code}:${AppError.from(error).message}`);

describe("service security", () => {
  let nats: NatsServer;
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    nats = await NatsServer.start({ args: ["--user", "poseloop", "--pass", NATS_PASSWORD] });
    dir = await makeTempDir("poseloop-security-");
  });
  afterAll(async () => {
    await nats.dispose();
    await dir.remove();
  });

  it("trainer: reaches a NATS server with the password in its URL, never logs it, and asks admin to publish", async () => {
    const trainer = await start(TRAINER, {
      POSELOOP_NATS_URL: nats.url.replace("nats://", `nats://poseloop:${NATS_PASSWORD}@`),
      POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
      POSELOOP_TRAINER_TOKENS: `train:${TRAIN_TOKEN}`,
      POSELOOP_MAX_CONCURRENT_JOBS: "0",
      POSELOOP_WORK_DIR: dir.path,
    });
    const client = createClient(TrainerService, `127.0.0.1:${trainer.port}`, { defaultTimeoutMs: 10_000 });
    try {
      const rollback = { target: { case: "rollbackModelName" as const, value: "demo" } };
      expect(await outcome(client.publishCheckpoint(rollback))).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
      expect(await outcome(client.publishCheckpoint(rollback, { headers: { authorization: `Bearer ${TRAIN_TOKEN}` } }))).toBe(
        `${Code.PERMISSION_DENIED}:PublishCheckpoint needs a token with the admin role`,
      );
      expect(await outcome(client.listJobs({}, { headers: { authorization: `Bearer ${TRAIN_TOKEN}` } }))).toBe("ok");
    } finally {
      client.$close();
    }
    const logs = JSON.stringify(trainer.logs);
    expect(logs).toContain("nats://poseloop:***@127.0.0.1");
    expect(logs).not.toContain(NATS_PASSWORD);
    expect(logs).not.toContain(TRAIN_TOKEN);
  });

  it("inferencer: signs in to NATS with POSELOOP_NATS_USER and a password file, and names the credential when refused", async () => {
    const passwordFile = join(dir.path, "nats-password");
    await writeFile(passwordFile, `${NATS_PASSWORD}\n`, { mode: 0o600 });
    const env = { POSELOOP_NATS_URL: nats.url, POSELOOP_NATS_USER: "poseloop", POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0" };
    const inferencer = await start(INFERENCER, { ...env, POSELOOP_NATS_PASSWORD_FILE: passwordFile });
    expect(inferencer.logs.some((log) => log["msg"] === "nats connected")).toBe(true);
    expect(JSON.stringify(inferencer.logs)).not.toContain(NATS_PASSWORD);

    const wrongFile = join(dir.path, "nats-password-wrong");
    await writeFile(wrongFile, "not-the-password\n", { mode: 0o600 });
    await expect(start(INFERENCER, { ...env, POSELOOP_NATS_PASSWORD_FILE: wrongFile })).rejects.toThrow(/refused this client.s credentials \(user poseloop\)/);
  });

  it("inferencer: answers nothing but health checks without a token once tokens are configured", async () => {
    const inferencer = await start(INFERENCER, {
      POSELOOP_BUS_DIR: dir.path,
      POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
      POSELOOP_INFERENCER_TOKENS: `stream:${STREAM_TOKEN}`,
    });
    const client = createClient(InferenceService, `127.0.0.1:${inferencer.port}`, { defaultTimeoutMs: 10_000 });
    const health = createClient(Health, `127.0.0.1:${inferencer.port}`);
    try {
      expect(await outcome(client.getServingModel({ modelName: "demo" }))).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
      expect(await outcome(client.detectKeypoints({}))).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
      expect(await outcome(client.getServingModel({ modelName: "demo" }, { headers: { authorization: `Bearer ${STREAM_TOKEN}` } }))).toBe("ok");
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
    } finally {
      client.$close();
      health.$close();
    }
  });

  it("refuses to start on an address other hosts reach with neither tokens nor TLS", async () => {
    const child = spawn(process.execPath, ["--conditions=@poseloop/source", "--import", "tsx", TRAINER], {
      env: { ...process.env, POSELOOP_BUS_DIR: dir.path, POSELOOP_TRAINER_LISTEN: "0.0.0.0:0" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(stderr).toMatch(/POSELOOP_TRAINER_LISTEN=0\.0\.0\.0:0 lets other hosts call this service.*POSELOOP_INSECURE=1/);
  });
});
