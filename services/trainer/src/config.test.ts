import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { loadConfig } from "@poseloop/trainer";

describe("trainer loadConfig", () => {
  it("defaults to the embedded bus on port 50052", () => {
    const config = loadConfig({});
    expect(config.grpc).toMatchObject({ host: "0.0.0.0", port: 50052, drainTimeoutMs: 10_000 });
    expect(config.bus).toMatchObject({ natsServers: [], embeddedDir: ".poseloop/bus" });
    expect(config.telemetry.exporter).toBe("none");
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("reports every problem at once", () => {
    let error: unknown;
    try {
      loadConfig({ POSELOOP_TRAINER_LISTEN: "x", POSELOOP_NATS_URL: "http://nats:4222", POSELOOP_DRAIN_TIMEOUT: "soon", POSELOOP_WORKER_ID: "a b" });
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toHaveLength(4);
  });
});
