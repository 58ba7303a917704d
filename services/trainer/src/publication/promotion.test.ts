import { create } from "@bufbuild/protobuf";
import { EmbeddedBus, ModelRegistry, type Bus } from "@poseloop/bus";
import { AppError, Code, silentLogger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PromotionMode, PromotionPolicySchema, PromotionVerdict } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import type { EvaluateRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { ifBetterVerdict, PromotionGate, REFERENCE_AP_BUCKET, ReferenceApCache, referenceSetOf, type Candidate } from "./promotion.js";

describe("ifBetterVerdict", () => {
  it("refuses a candidate that does not beat the serving AP by the margin, and says so with both APs", () => {
    expect(ifBetterVerdict(0.137, 0.235, 0.005)).toEqual({ promote: false, reason: "AP 0.137 is not above serving 0.235 + 0.005" });
    // Exactly the margin is not more than it.
    expect(ifBetterVerdict(0.24, 0.235, 0.005).promote).toBe(false);
    expect(ifBetterVerdict(0.2351, 0.235, 0.005).promote).toBe(false);
  });

  it("accepts a candidate above serving + margin; APs equal to three decimals get a fourth", () => {
    expect(ifBetterVerdict(0.25, 0.235, 0.005)).toEqual({ promote: true, reason: "AP 0.250 is above serving 0.235 + 0.005" });
    expect(ifBetterVerdict(0.2352, 0.2351, 0)).toEqual({ promote: true, reason: "AP 0.2352 is above serving 0.2351 + 0" });
    expect(ifBetterVerdict(0.2, 0.2, 0).promote).toBe(false);
  });
});

describe("referenceSetOf", () => {
  const config = tinyTrainConfig({ validation: { useGtBoxes: true, flipTest: true, maxImages: 4 } });

  it("is the candidate job's own validation set and settings when the policy names none", () => {
    const reference = referenceSetOf(create(PromotionPolicySchema, { mode: PromotionMode.IF_BETTER }), config);
    expect(reference).toMatchObject({ fromPolicy: false, flipTest: true, useGtBoxes: true, maxImages: 4 });
    expect(reference.data.synthetic?.seed).toBe(5n);
  });

  it("is the policy's set, whole, people cropped by their labelled boxes when it has no detections", () => {
    const coco = { kind: DatasetKind.COCO, coco: { root: "coco", valAnnotations: "annotations/person_keypoints_val2017.json", valImages: "val2017" } };
    // A job validating with detections of its own (a COCO set with val_detections).
    const detected = tinyTrainConfig({ validation: { useGtBoxes: true, maxImages: 4 } });
    if (detected.validation !== undefined) detected.validation.useGtBoxes = false;
    const reference = referenceSetOf(create(PromotionPolicySchema, { mode: PromotionMode.IF_BETTER, referenceSet: coco }), detected);
    expect(reference).toMatchObject({ fromPolicy: true, useGtBoxes: true, maxImages: 0, name: "coco coco/annotations/person_keypoints_val2017.json" });
  });
});

describe("PromotionGate", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let bus: Bus;
  let registry: ModelRegistry;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-promotion-");
    bus = await EmbeddedBus.open(dir.path);
    registry = await ModelRegistry.open(bus, silentLogger);
  });
  afterAll(async () => dir.remove());

  /** A version of `name` with an fp32 model only, made to serve. */
  async function serve(name: string, ap: number): Promise<string> {
    const published = await registry.publish({
      manifest: { model: { name }, precision: Precision.FP32, metrics: { ap }, trainingJobId: "job-serving" },
      files: [{ file: "model.onnx", data: new TextEncoder().encode(`model of AP ${ap}`), precision: Precision.FP32 }],
      servingFile: "model.onnx",
      promote: true,
      setBy: "test",
    });
    return published.manifest.model?.version ?? "";
  }

  function candidate(name: string, ap: number): Candidate {
    return {
      modelName: name,
      jobId: "job-20261205-070000-abcdef",
      checkpointId: "e0002-s0000010",
      config: tinyTrainConfig(),
      metrics: create(KeypointMetricsSchema, { ap }),
      model: () => Promise.resolve(new TextEncoder().encode("candidate")),
    };
  }

  /** An Evaluate that answers `ap` for any version, counting its calls. */
  function evaluator(ap: number) {
    const requests: EvaluateRequest[] = [];
    const evaluate = (request: EvaluateRequest) => {
      requests.push(request);
      return Promise.resolve({ metrics: { ap, dataset: "tiny/val" } });
    };
    return { evaluate, requests };
  }

  it("promotes the first version of a name, and every one without a policy or under ALWAYS", async () => {
    const gate = new PromotionGate({ registry, logger: silentLogger });
    const first = await gate.plan(candidate("gate-always", 0.1));
    expect(first).toMatchObject({ promote: true, trial: false, decision: { verdict: PromotionVerdict.PROMOTED, reason: "first version: nothing served yet" } });
    await serve("gate-always", 0.5);
    const next = await gate.plan(candidate("gate-always", 0.1));
    expect(next).toMatchObject({ promote: true, decision: { mode: PromotionMode.ALWAYS, verdict: PromotionVerdict.PROMOTED, reason: "no promotion policy set: every publication is promoted" } });
  });

  it("if-better: refuses a worse candidate with both APs, measuring the serving version once per reference set", async () => {
    const name = "gate-if-better";
    const serving = await serve(name, 0.235);
    await registry.setPolicy(name, { mode: PromotionMode.IF_BETTER, minApGain: 0.005 }, { setBy: "admin" });
    const { evaluate, requests } = evaluator(0.235);
    const gate = new PromotionGate({ registry, evaluate, apCache: await bus.keyValueStore(REFERENCE_AP_BUCKET), logger: silentLogger });

    const worse = await gate.plan(candidate(name, 0.137));
    expect(worse.promote).toBe(false);
    expect(worse.decision).toMatchObject({
      verdict: PromotionVerdict.REJECTED,
      candidateAp: 0.137,
      servingAp: 0.235,
      reason: "AP 0.137 is not above serving 0.235 + 0.005",
      serving: { name, version: serving },
    });
    // The serving version was measured on the candidate job's validation set, with its settings.
    expect(requests).toHaveLength(1);
    expect(requests[0]?.model).toEqual({ case: "version", value: expect.objectContaining({ name, version: serving }) as unknown });
    expect(requests[0]?.data?.synthetic?.seed).toBe(5n);

    const better = await gate.plan(candidate(name, 0.3));
    expect(better).toMatchObject({ promote: true, decision: { verdict: PromotionVerdict.PROMOTED, candidateAp: 0.3 } });
    // KeypointMetrics keeps a float: the cached AP is the measured one to float precision.
    expect(better.decision.servingAp).toBeCloseTo(0.235, 6);
    expect(requests, "the serving AP came from the cache").toHaveLength(1);
  });

  it("if-better: a comparison that cannot be measured promotes nothing and says why", async () => {
    const name = "gate-unmeasured";
    await serve(name, 0.2);
    await registry.setPolicy(name, { mode: PromotionMode.IF_BETTER }, { setBy: "admin" });
    const evaluate = () => Promise.reject(new AppError(Code.FAILED_PRECONDITION, `${name}@v1 names no training job this trainer knows`));
    const plan = await new PromotionGate({ registry, evaluate, logger: silentLogger }).plan(candidate(name, 0.9));
    expect(plan.promote).toBe(false);
    expect(plan.decision).toMatchObject({ verdict: PromotionVerdict.REJECTED, reason: expect.stringMatching(/^the comparison could not be measured \(.*names no training job.*\); not promoted/) as string });
  });

  it("canary and shadow: a trial instead of a promotion", async () => {
    const name = "gate-canary";
    await serve(name, 0.2);
    await registry.setPolicy(name, { mode: PromotionMode.SHADOW }, { setBy: "admin" });
    const gate = new PromotionGate({ registry, logger: silentLogger });
    const plan = await gate.plan(candidate(name, 0.9));
    expect(plan).toMatchObject({ promote: false, trial: true, decision: { mode: PromotionMode.SHADOW, verdict: PromotionVerdict.TRIAL_STARTED } });

    // Published unpromoted, then on trial: the inferencers see the candidate; the log has the trial's start.
    const published = await registry.publish({
      manifest: { model: { name }, precision: Precision.FP32, metrics: { ap: 0.9 } },
      files: [{ file: "model.onnx", data: new TextEncoder().encode("candidate"), precision: Precision.FP32 }],
      servingFile: "model.onnx",
      promote: false,
      setBy: "job-20261205-070000-abcdef",
    });
    const ref = published.manifest.model;
    if (ref === undefined) throw new Error("the registry published no model reference");
    const decision = await gate.record(plan, ref, false);
    expect(decision).toMatchObject({ verdict: PromotionVerdict.TRIAL_STARTED, candidate: { version: ref.version }, decidedBy: "job-20261205-070000-abcdef" });
    expect((await registry.getCandidate(name))?.record.model?.version).toBe(ref.version);
    expect((await registry.getServing(name))?.record.model?.version).not.toBe(ref.version);
  });
});

describe("the cached serving AP", () => {
  it("is keyed by version and by the set and its settings", () => {
    const base = referenceSetOf(undefined, tinyTrainConfig());
    const flipped = { ...base, flipTest: !base.flipTest };
    const key = ReferenceApCache.key({ name: "demo", version: "v1" }, base);
    expect(key).toMatch(/^demo\.v1\.[0-9a-f]{24}$/);
    expect(ReferenceApCache.key({ name: "demo", version: "v1" }, flipped)).not.toBe(key);
    expect(ReferenceApCache.key({ name: "demo", version: "v2" }, base)).not.toBe(key);
  });
});
