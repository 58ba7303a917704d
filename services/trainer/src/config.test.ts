import { AppError, Code, POSELOOP_ENV_VARIABLES } from "@poseloop/core";
import { variablesRead } from "@poseloop/testkit";
import { describe, expect, it } from "vitest";
import { accessKey } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { loadConfig } from "@poseloop/trainer";

describe("trainer loadConfig", () => {
  it("defaults to the embedded bus on port 50052", () => {
    const config = loadConfig({});
    // No tokens and no TLS: nobody else may reach it.
    expect(config.grpc).toMatchObject({ host: "127.0.0.1", port: 50052, drainTimeoutMs: 10_000 });
    expect(config.bus).toMatchObject({ natsServers: [], embeddedDir: ".poseloop/bus" });
    expect(config.telemetry.exporter).toBe("none");
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("refuses to serve other hosts without tokens or TLS, unless POSELOOP_INSECURE=1 says so", () => {
    expect(() => loadConfig({ POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052" })).toThrow(/POSELOOP_TRAINER_LISTEN=0\.0\.0\.0:50052 lets other hosts call this service/);
    expect(loadConfig({ POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052", POSELOOP_INSECURE: "1" }).grpc.host).toBe("0.0.0.0");
    expect(loadConfig({ POSELOOP_TRAINER_TOKENS: "train:train-token-0123456789" }).grpc.host).toBe("127.0.0.1");
    expect(loadConfig({ POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052", POSELOOP_TRAINER_TOKENS: "train:train-token-0123456789" }).grpc.host).toBe("0.0.0.0");
  });

  it("keeps POSELOOP_TRAINER_TOKEN working as an admin token beside the role tokens", () => {
    const config = loadConfig({ POSELOOP_TRAINER_TOKEN: "legacy", POSELOOP_TRAINER_TOKENS: "train:train-token-0123456789" });
    expect(config.grpc.tokens).toEqual([{ role: "train", token: "train-token-0123456789" }, { role: "admin", token: "legacy" }]);
  });

  it("asks admin for changing the serving model and train for everything else", () => {
    const access = loadConfig({}).grpc.methodAccess;
    const roles = Object.fromEntries(TrainerService.methods.map((method) => [method.name, access[accessKey(method)]]));
    expect(roles).toMatchObject({ PublishCheckpoint: "admin", StartTraining: "train", CancelJob: "train", WatchJob: "train", GetTrainerInfo: "train" });
    expect(Object.values(roles)).not.toContain(undefined);
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
    const poseloop = [...variablesRead(loadConfig)].filter((name) => name.startsWith("POSELOOP_"));
    expect(poseloop).toContain("POSELOOP_NATS_URL");
    expect(poseloop.filter((name) => !POSELOOP_ENV_VARIABLES.includes(name))).toEqual([]);
  });
});
