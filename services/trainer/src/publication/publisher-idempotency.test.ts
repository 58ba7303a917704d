import { create, toBinary } from "@bufbuild/protobuf";
import { EmbeddedBus, ModelRegistry } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import type { ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import type { ExportOutcome } from "./model-export.js";
import { Publisher, type PublicationLog, type PublicationTarget } from "./publisher.js";

/** What the worker hands back for an fp32-only publication (no int8 gate): enough for the registry. */
const outcome: ExportOutcome = {
  fp32: new TextEncoder().encode("fp32 model"),
  int8: undefined,
  weights: new TextEncoder().encode("weights"),
  fp32Metrics: toBinary(KeypointMetricsSchema, create(KeypointMetricsSchema, { ap: 0.5 })),
  int8Metrics: undefined,
  gate: undefined,
  epoch: 2,
  step: 10,
  sizes: { fp32: 10, int8: 0 },
};

describe("a job's publication, once per checkpoint", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let registry: ModelRegistry;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-publisher-");
    registry = await ModelRegistry.open(await EmbeddedBus.open(dir.path), silentLogger);
  });
  afterAll(async () => dir.remove());

  it("is made once when its trainer died after the registry write and a takeover publishes the checkpoint again", async () => {
    const target: PublicationTarget = {
      jobId: "job-20261205-063000-abcdef",
      config: tinyTrainConfig({ quantization: { enabled: false } }),
      labels: {},
      checkpointId: "e2-s10",
      modelName: "once",
      promote: true,
      reuseExisting: true,
    };
    let exports = 0;
    const exporter = async (): Promise<ExportOutcome> => {
      exports++;
      return outcome;
    };
    // The first owner: the version reaches the registry, then the process dies before the job's record lists it.
    const dying: PublicationLog = {
      append: async () => undefined,
      recordPublished: async () => {
        throw new Error("trainer killed");
      },
    };
    await expect(new Publisher(registry, silentLogger).publish(exporter, target, dying)).rejects.toThrow("trainer killed");

    const recorded: ModelRef[] = [];
    const events: string[] = [];
    const takeover: PublicationLog = {
      append: async (event) => {
        events.push(event?.case ?? "");
      },
      recordPublished: async (model) => {
        recorded.push(model);
        return true;
      },
    };
    const manifest = await new Publisher(registry, silentLogger).publish(exporter, target, takeover);

    const versions = await registry.listVersions("once");
    expect(versions).toHaveLength(1);
    expect(manifest?.model?.version).toBe(versions[0]);
    expect(recorded.map((model) => model.version)).toEqual(versions);
    expect(events).toContain("published");
    expect(await registry.history("once")).toHaveLength(1); // one swap, not two
    expect(exports).toBe(1);
  });

  it("is made again on request without reuseExisting (PublishCheckpoint asked twice)", async () => {
    const target: PublicationTarget = {
      jobId: "job-20261205-063000-fedcba",
      config: tinyTrainConfig({ quantization: { enabled: false } }),
      labels: {},
      checkpointId: "e1-s5",
      modelName: "twice",
      promote: false,
    };
    const log: PublicationLog = { append: async () => undefined, recordPublished: async () => true };
    await new Publisher(registry, silentLogger).publish(async () => outcome, target, log);
    await new Publisher(registry, silentLogger).publish(async () => outcome, target, log);
    expect(await registry.listVersions("twice")).toHaveLength(2);
  });
});
