import { AppError, Code, POSELOOP_ENV_VARIABLES, type Env } from "@poseloop/core";
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

  it("reports POSELOOP_* typos with the closest name, but not the other programs' variables", () => {
    const config = loadConfig({ POSELOOP_NATS_ULR: "nats://nats:4222", POSELOOP_INFERENCER_LISTEN: "0.0.0.0:1", POSELOOP_TOKEN: "t", POSELOOP_DEMO_EPOCHS: "2" });
    expect(config.unknownVariables).toEqual([{ name: "POSELOOP_NATS_ULR", suggestion: "POSELOOP_NATS_URL" }]);
  });

  it("reads only variables in POSELOOP_ENV_VARIABLES, the list every PoseLoop program knows", () => {
    const read = new Set<string>();
    const recording: Env = new Proxy({}, {
      get: (_target, name) => {
        if (typeof name === "string") read.add(name);
        return undefined;
      },
    });
    loadConfig(recording);
    const poseloop = [...read].filter((name) => name.startsWith("POSELOOP_"));
    expect(poseloop).toContain("POSELOOP_NATS_URL");
    expect(poseloop.filter((name) => !POSELOOP_ENV_VARIABLES.includes(name))).toEqual([]);
  });
});
