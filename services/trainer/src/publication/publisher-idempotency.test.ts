import { create, toBinary } from "@bufbuild/protobuf";
import { EmbeddedBus, ModelRegistry } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { Precision, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PromotionMode, PromotionVerdict, type PromotionDecision } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import type { ExportOutcome } from "./model-export.js";
import { PromotionGate, type PromotionGateDependencies } from "./promotion.js";
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

describe("a job's promotion decision, once per publication", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let registry: ModelRegistry;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-promotion-once-");
    registry = await ModelRegistry.open(await EmbeddedBus.open(dir.path), silentLogger);
  });
  afterAll(async () => dir.remove());

  /** An if-better model name whose serving version measures `servingAp` on any set. */
  async function ifBetterModel(name: string, servingAp: number): Promise<{ serving: string; evaluate: NonNullable<PromotionGateDependencies["evaluate"]> }> {
    const published = await registry.publish({
      manifest: { model: { name }, precision: Precision.FP32, metrics: { ap: servingAp } },
      files: [{ file: "model.onnx", data: new TextEncoder().encode("serving"), precision: Precision.FP32 }],
      servingFile: "model.onnx",
      promote: true,
      setBy: "test",
    });
    await registry.setPolicy(name, { mode: PromotionMode.IF_BETTER, minApGain: 0.005 }, { setBy: "admin" });
    return { serving: published.manifest.model?.version ?? "", evaluate: () => Promise.resolve({ metrics: { ap: servingAp } }) };
  }

  /** The registry as the gate sees it, with the trainer killed the first time it keeps a decision. */
  function dyingAtFirstDecision(): PromotionGateDependencies["registry"] {
    let killed = false;
    return {
      getPolicy: (name) => registry.getPolicy(name),
      getServing: (name) => registry.getServing(name),
      history: (name) => registry.history(name),
      decisions: (name) => registry.decisions(name),
      setServing: (name, model, options) => registry.setServing(name, model, options),
      startTrial: (name, model, policy, options) => registry.startTrial(name, model, policy, options),
      recordDecision: (name, init) => {
        if (killed) return registry.recordDecision(name, init);
        killed = true;
        return Promise.reject(new Error("trainer killed"));
      },
    };
  }

  function target(name: string, jobId: string): PublicationTarget {
    return { jobId, config: tinyTrainConfig({ quantization: { enabled: false } }), labels: {}, checkpointId: "e2-s10", modelName: name, promote: true, reuseExisting: true };
  }

  /** A takeover's log: what it records, and the decision its "published" event carries. */
  function takeoverLog() {
    const decisions: (PromotionDecision | undefined)[] = [];
    const published: (PromotionDecision | undefined)[] = [];
    const log: PublicationLog = {
      append: async (event) => {
        if (event?.case === "published") published.push(event.value.decision as PromotionDecision | undefined);
      },
      recordPublished: async (_model, decision) => {
        decisions.push(decision);
        return true;
      },
    };
    return { log, decisions, published };
  }

  it("is not made twice when the trainer died after keeping it: a worse candidate stays rejected, the serving version untouched", async () => {
    const name = "once-rejected";
    const { serving, evaluate } = await ifBetterModel(name, 0.235);
    const gate = new PromotionGate({ registry, evaluate, logger: silentLogger });
    const dying: PublicationLog = { append: async () => undefined, recordPublished: () => Promise.reject(new Error("trainer killed")) };
    const worse = { ...outcome, fp32Metrics: toBinary(KeypointMetricsSchema, create(KeypointMetricsSchema, { ap: 0.137 })) };
    await expect(new Publisher(registry, silentLogger, gate).publish(async () => worse, target(name, "job-20261205-080000-aaaaaa"), dying)).rejects.toThrow("trainer killed");

    const takeover = takeoverLog();
    const manifest = await new Publisher(registry, silentLogger, gate).publish(async () => worse, target(name, "job-20261205-080000-aaaaaa"), takeover.log);

    const decided = await registry.decisions(name);
    expect(decided).toHaveLength(1);
    expect(decided[0]).toMatchObject({ verdict: PromotionVerdict.REJECTED, candidate: { version: manifest?.model?.version }, serving: { version: serving } });
    expect(decided[0]?.reason).toBe("AP 0.137 is not above serving 0.235 + 0.005");
    expect(takeover.decisions.map((d) => d?.verdict)).toEqual([PromotionVerdict.REJECTED]);
    expect(takeover.published.map((d) => d?.reason)).toEqual([decided[0]?.reason]);
    expect((await registry.getServing(name))?.record.model?.version).toBe(serving);
  });

  it("is made once, by the takeover, when the trainer died between the registry write and the decision: no second promotion", async () => {
    const name = "once-promoted";
    const { serving, evaluate } = await ifBetterModel(name, 0.235);
    const swapsBefore = (await registry.history(name)).length;
    const better = { ...outcome, fp32Metrics: toBinary(KeypointMetricsSchema, create(KeypointMetricsSchema, { ap: 0.3 })) };
    const first = new PromotionGate({ registry: dyingAtFirstDecision(), evaluate, logger: silentLogger });
    const untouched: PublicationLog = { append: async () => undefined, recordPublished: async () => true };
    await expect(new Publisher(registry, silentLogger, first).publish(async () => better, target(name, "job-20261205-080000-bbbbbb"), untouched)).rejects.toThrow("trainer killed");
    // The registry write promoted it; nothing says why yet.
    const promoted = (await registry.getServing(name))?.record.model?.version;
    expect(promoted).not.toBe(serving);
    expect(await registry.decisions(name)).toHaveLength(0);

    const takeover = takeoverLog();
    const gate = new PromotionGate({ registry, evaluate, logger: silentLogger });
    await new Publisher(registry, silentLogger, gate).publish(async () => better, target(name, "job-20261205-080000-bbbbbb"), takeover.log);
    await new Publisher(registry, silentLogger, gate).publish(async () => better, target(name, "job-20261205-080000-bbbbbb"), takeoverLog().log);

    const decided = await registry.decisions(name);
    expect(decided).toHaveLength(1);
    // Against the version that served before it, with both APs, as the first attempt would have recorded it.
    expect(decided[0]).toMatchObject({ verdict: PromotionVerdict.PROMOTED, candidate: { version: promoted }, serving: { version: serving }, reason: "AP 0.300 is above serving 0.235 + 0.005" });
    expect(takeover.decisions[0]?.verdict).toBe(PromotionVerdict.PROMOTED);
    expect(await registry.history(name)).toHaveLength(swapsBefore + 1);
    expect(await registry.listVersions(name)).toHaveLength(2);
  });
});
