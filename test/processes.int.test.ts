import { createClient } from "@poseloop/grpc";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import { makeTempDir, spawnService, type ServiceProcess } from "@poseloop/testkit";
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
      const env = { POSELOOP_BUS_DIR: dir.path, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0" };
      const [trainer, inferencer] = await Promise.all([start(TRAINER, env), start(INFERENCER, env)]);
      expect(trainer.logs.find((log) => log["msg"] === "listening")).toMatchObject({ bus: "embedded", bus_location: dir.path });
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
    ).rejects.toThrow(/invalid inferencer configuration \(3 problems\).*POSELOOP_INFERENCER_LISTEN.*nowhere.*POSELOOP_MODEL.*POSELOOP_LOG_LEVEL.*loud/s);
  });
});
