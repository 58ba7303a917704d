import { AppError, Code, POSELOOP_ENV_VARIABLES } from "@poseloop/core";
import { variablesRead } from "@poseloop/testkit";
import { describe, expect, it } from "vitest";
import { loadConfig } from "@poseloop/inferencer";

describe("inferencer loadConfig", () => {
  it("defaults to the embedded bus on port 50051 serving the demo model", () => {
    const config = loadConfig({ POSELOOP_NATS_URL: "nats://a:4222, nats://b:4222" });
    expect(config.grpc).toMatchObject({ port: 50051 });
    expect(config.bus.natsServers).toEqual(["nats://a:4222", "nats://b:4222"]);
    expect(config.defaultModel).toBe("demo");
  });

  it("runs a person detector only with POSELOOP_DETECTOR_MODEL, a valid name other than the pose model's", () => {
    expect(loadConfig({}).detectorModel).toBeUndefined();
    expect(loadConfig({ POSELOOP_DETECTOR_MODEL: "people" }).detectorModel).toBe("people");
    let error: unknown;
    try {
      loadConfig({ POSELOOP_DETECTOR_MODEL: "demo" });
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toEqual(["POSELOOP_DETECTOR_MODEL: demo is the pose model's name (POSELOOP_MODEL); a name serves one kind of model"]);
    expect(() => loadConfig({ POSELOOP_DETECTOR_MODEL: "My.Detector" })).toThrow(/POSELOOP_DETECTOR_MODEL: model name "My.Detector"/);
  });

  it("rejects a model name that cannot be a NATS subject token", () => {
    let error: unknown;
    try {
      loadConfig({ POSELOOP_MODEL: "My.Model", POSELOOP_GRPC_MAX_MESSAGE_BYTES: "10" });
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = (error as AppError).problems;
    expect(problems).toHaveLength(2);
    expect(problems.join("\n")).toMatch(/POSELOOP_MODEL: model name "My.Model"/);
    expect(problems.join("\n")).toMatch(/POSELOOP_GRPC_MAX_MESSAGE_BYTES=10 is below the minimum/);
  });

  it("serves /metrics only with POSELOOP_METRICS_PORT, on the gRPC listen host, and reports a bad port with the rest", () => {
    expect(loadConfig({}).metrics).toBeUndefined();
    expect(loadConfig({ POSELOOP_METRICS_PORT: "0" }).metrics).toEqual({ host: "127.0.0.1", port: 0 });
    const served = loadConfig({ POSELOOP_METRICS_PORT: "9464", POSELOOP_INFERENCER_LISTEN: "10.1.2.3:50051", POSELOOP_INFERENCER_TOKENS: "stream:s3cret-token-value" });
    expect(served.metrics).toEqual({ host: "10.1.2.3", port: 9464 });
    let error: unknown;
    try {
      loadConfig({ POSELOOP_METRICS_PORT: "metrics", POSELOOP_MAX_BATCH: "0" });
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect([...(error as AppError).problems].sort()).toEqual(['POSELOOP_MAX_BATCH=0 is below the minimum 1', 'POSELOOP_METRICS_PORT="metrics" is not an integer']);
  });

  it("ends silent streams after 10s without StreamOptions and 60s without a message, unless told otherwise", () => {
    expect(loadConfig({}).limits).toMatchObject({ streamFirstMessageTimeoutMs: 10_000, streamIdleTimeoutMs: 60_000 });
    const config = loadConfig({ POSELOOP_STREAM_FIRST_MESSAGE_TIMEOUT: "2s", POSELOOP_STREAM_IDLE_TIMEOUT: "5m" });
    expect(config.limits).toMatchObject({ streamFirstMessageTimeoutMs: 2000, streamIdleTimeoutMs: 300_000 });
    expect(() => loadConfig({ POSELOOP_STREAM_IDLE_TIMEOUT: "0s" })).toThrow(/POSELOOP_STREAM_IDLE_TIMEOUT/);
  });

  it("limits streams per client host with POSELOOP_MAX_STREAMS_PER_PEER, 16 (or POSELOOP_MAX_STREAMS if lower) by default", () => {
    expect(loadConfig({}).limits).toMatchObject({ maxStreams: 64, maxStreamsPerPeer: 16 });
    expect(loadConfig({ POSELOOP_MAX_STREAMS: "4" }).limits.maxStreamsPerPeer).toBe(4);
    expect(loadConfig({ POSELOOP_MAX_STREAMS_PER_PEER: "64" }).limits.maxStreamsPerPeer).toBe(64);
    expect(() => loadConfig({ POSELOOP_MAX_STREAMS_PER_PEER: "0" })).toThrow(/POSELOOP_MAX_STREAMS_PER_PEER/);
  });

  it("asks a stream token for every call once POSELOOP_INFERENCER_TOKENS is set, and binds loopback without one", () => {
    expect(loadConfig({}).grpc.host).toBe("127.0.0.1");
    const config = loadConfig({ POSELOOP_INFERENCER_LISTEN: "0.0.0.0:50051", POSELOOP_INFERENCER_TOKENS: "stream:stream-token-0123456789" });
    expect(config.grpc).toMatchObject({ host: "0.0.0.0", tokens: [{ role: "stream", token: "stream-token-0123456789" }] });
    expect(new Set(Object.values(config.grpc.methodAccess))).toEqual(new Set(["stream"]));
    expect(Object.keys(config.grpc.methodAccess)).toContain("poseloop.inference.v1.InferenceService/GetServingModel");
    expect(() => loadConfig({ POSELOOP_INFERENCER_LISTEN: "0.0.0.0:50051" })).toThrow(/POSELOOP_INFERENCER_LISTEN=0\.0\.0\.0:50051 lets other hosts call this service/);
  });

  it("reports POSELOOP_* typos with the closest name, but not the other programs' variables", () => {
    const config = loadConfig({ POSELOOP_NATS_ULR: "nats://nats:4222", POSELOOP_TRAINER_LISTEN: "0.0.0.0:1", POSELOOP_TOKEN: "t", POSELOOP_DEMO_EPOCHS: "2" });
    expect(config.unknownVariables).toEqual([{ name: "POSELOOP_NATS_ULR", suggestion: "POSELOOP_NATS_URL" }]);
  });

  it("reads only variables in POSELOOP_ENV_VARIABLES, the list every PoseLoop program knows", () => {
    const poseloop = [...variablesRead(loadConfig)].filter((name) => name.startsWith("POSELOOP_"));
    expect(poseloop).toContain("POSELOOP_NATS_URL");
    expect(poseloop.filter((name) => !POSELOOP_ENV_VARIABLES.includes(name))).toEqual([]);
  });
});
