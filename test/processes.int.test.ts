import { createClient } from "@poseloop/grpc";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import { makeTempDir, spawnService, type ServiceProcess } from "@poseloop/testkit";
import { spawn } from "node:child_process";
import { createServer, type AddressInfo } from "node:net";
import { afterEach, describe, expect, inject, it } from "vitest";

const TRAINER = "services/trainer/src/main.ts";
const INFERENCER = "services/inferencer/src/main.ts";

const running: ServiceProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((service) => service.stop("SIGKILL")));
});

async function start(entry: string, env: Record<string, string>): Promise<ServiceProcess> {
  const service = await spawnService(entry, { POSELOOP_DRAIN_TIMEOUT: "2s", ...env });
  running.push(service);
  return service;
}

/** Runs a service that is expected to fail at start, to its exit: its exit code and stderr lines. */
async function runToExit(entry: string, env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; stderr: string[] }> {
  const child = spawn(process.execPath, ["--conditions=@poseloop/source", "--import", "tsx", entry], {
    env: { ...process.env, POSELOOP_DRAIN_TIMEOUT: "2s", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearTimeout(timer);
  return { code, stderr: stderr.split("\n").filter((line) => line !== "") };
}

async function health(port: number, service = ""): Promise<HealthCheckResponse_ServingStatus> {
  const client = createClient(Health, `127.0.0.1:${port}`);
  try {
    return (await client.check({ service })).status;
  } finally {
    client.$close();
  }
}

describe("service processes", () => {
  it("run side by side on the embedded bus, report health, and stop cleanly on SIGTERM", async () => {
    const dir = await makeTempDir();
    try {
      // One shell for both, as a user has it: each service's variables, and a typo.
      const env = { POSELOOP_BUS_DIR: dir.path, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_NATS_ULR: "nats://127.0.0.1:4222" };
      const [trainer, inferencer] = await Promise.all([start(TRAINER, env), start(INFERENCER, env)]);
      expect(trainer.logs.find((log) => log["msg"] === "listening")).toMatchObject({ bus: "embedded", bus_location: dir.path });
      for (const service of [trainer, inferencer]) {
        const warned = service.logs.filter((log) => log["level"] === "warn" && typeof log["variable"] === "string").map((log) => log["variable"]);
        expect(warned).toContain("POSELOOP_NATS_ULR");
        expect(warned).not.toContain("POSELOOP_TRAINER_LISTEN");
        expect(warned).not.toContain("POSELOOP_INFERENCER_LISTEN");
        const warning = service.logs.find((log) => log["variable"] === "POSELOOP_NATS_ULR");
        expect(warning?.["did_you_mean"]).toBe("POSELOOP_NATS_URL");
        expect(warning?.["msg"]).toMatch(/POSELOOP_NATS_ULR.*did you mean POSELOOP_NATS_URL\?/);
      }
      expect(await health(trainer.port)).toBe(HealthCheckResponse_ServingStatus.SERVING);
      // No model is loaded yet: the inferencer must not attract traffic.
      expect(await health(inferencer.port)).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(await trainer.stop()).toBe(0);
      expect(await inferencer.stop()).toBe(0);
    } finally {
      await dir.remove();
    }
  });

  it("connect to a real nats-server when POSELOOP_NATS_URL is set", async () => {
    // API only: a trainer on the shared server must not take the jobs of other test files.
    const trainer = await start(TRAINER, { POSELOOP_NATS_URL: inject("natsUrl"), POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_MAX_CONCURRENT_JOBS: "0" });
    expect(trainer.logs.find((log) => log["msg"] === "listening")).toMatchObject({ bus: "nats", bus_location: inject("natsUrl") });
    expect(trainer.logs.some((log) => log["msg"] === "nats connected")).toBe(true);
    expect(await trainer.stop()).toBe(0);
  });

  it("refuse to start with an invalid configuration, naming every problem", async () => {
    await expect(
      start(INFERENCER, { POSELOOP_INFERENCER_LISTEN: "nowhere", POSELOOP_MODEL: "Bad Name", POSELOOP_LOG_LEVEL: "loud" }),
    ).rejects.toThrow(/\nposeloop-inferencer: invalid inferencer configuration \(3 problems\): POSELOOP_INFERENCER_LISTEN.*nowhere.*POSELOOP_MODEL.*POSELOOP_LOG_LEVEL.*loud[^\n]*\n/);
  });

  it("name the cause on one stderr line and exit non-zero when the listen address is taken", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
    const dir = await makeTempDir();
    try {
      const env = { POSELOOP_BUS_DIR: dir.path, POSELOOP_TRAINER_LISTEN: address, POSELOOP_INFERENCER_LISTEN: address };
      const results = await Promise.all([runToExit(TRAINER, env), runToExit(INFERENCER, env)]);
      for (const [name, { code, stderr }] of [["trainer", results[0]], ["inferencer", results[1]]] as const) {
        expect(code).toBe(1);
        expect(stderr.filter((line) => line.includes("EADDRINUSE"))).toEqual([`poseloop-${name}: cannot listen on ${address}: address already in use (EADDRINUSE)`]);
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      await dir.remove();
    }
  });
});
