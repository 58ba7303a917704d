import { randomBytes } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { SpanKind } from "@opentelemetry/api";
import { sleep } from "@poseloop/core";
import { decodeModel, encodeModel, hostTensor, toTensorProto } from "@poseloop/onnx";
import { NodeProtoSchema } from "@poseloop/proto/onnx/onnx_pb";
import { installTestTelemetry, withSpan, type TestTelemetry } from "@poseloop/telemetry";
import type { FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { PromotionDecisionSchema, PromotionMode, PromotionVerdict, type PromotionDecision, type PromotionPolicySchema } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { jpegFrame, startHarness, streamRequests, syntheticJpegs, type InferencerHarness } from "../testing/harness.js";
import { buildTestModel, publishTestModel, type PublishTestModelOptions, type TestModel } from "../testing/test-models.js";
import { inCanaryShare } from "./canary-share.js";

const natsUrl = inject("natsUrl");
const MODEL = "trial-rollout";
const WINDOW = 20;

/**
 * The serving model's own graph with its heatmaps multiplied by 0: a valid model that loads and passes the
 * warm-up (its keypoints are finite), but puts every keypoint of every person at the same place.
 */
async function constantHeatmapModel(): Promise<TestModel> {
  const healthy = await buildTestModel({ seed: 1, int8: false });
  const model = decodeModel(healthy.fp32);
  const graph = model.graph;
  const output = graph?.output[0];
  const producer = graph?.node.find((node) => node.output.includes(output?.name ?? ""));
  if (graph === undefined || output === undefined || producer === undefined) throw new Error("the test model has no output producer");
  graph.initializer.push(toTensorProto("constant_heatmaps_scale", hostTensor("float32", [], [0])));
  producer.output = producer.output.map((name) => (name === output.name ? `${name}_live` : name));
  graph.node.push(create(NodeProtoSchema, { opType: "Mul", name: "constant_heatmaps", input: [`${output.name}_live`, "constant_heatmaps_scale"], output: [output.name] }));
  const fp32 = encodeModel(model);
  return { ...healthy, fp32, serving: fp32 };
}

interface Answer {
  readonly result: FrameResult;
  readonly at: number;
}

let serving: TestModel;
let broken: TestModel;
let jpegs: Uint8Array[];

beforeAll(async () => {
  [serving, broken, jpegs] = await Promise.all([buildTestModel({ seed: 1 }), constantHeatmapModel(), syntheticJpegs(6)]);
});

describe("canary and shadow trials", () => {
  let harness: InferencerHarness;
  let baseline: string;
  let telemetry: TestTelemetry;

  beforeAll(async () => {
    telemetry = installTestTelemetry("inferencer");
    harness = await startHarness(natsUrl, MODEL);
    baseline = (await publishTestModel(harness.registry, MODEL, serving, { version: "baseline" })).manifest.model?.version ?? "";
    await harness.inferencer.models.waitForServing(20_000);
  });
  afterAll(async () => {
    await harness?.close();
    await telemetry?.shutdown();
  });

  /** Publishes `model` without promoting it and puts it on trial under `policy`, as the trainer does. */
  async function startTrial(model: TestModel, version: string, policy: MessageInitShape<typeof PromotionPolicySchema>, options: PublishTestModelOptions = {}): Promise<string> {
    const published = await publishTestModel(harness.registry, MODEL, model, { ...options, version, promote: false, trainingJobId: `job-${version}` });
    const set = await harness.registry.setPolicy(MODEL, { windowFrames: WINDOW, minMeanOks: 0.8, maxFailureRate: 0.05, maxTrialSeconds: 60, ...policy }, { setBy: "test" });
    // In a span, as the trainer's publication starts it: the trial's record carries its trace context.
    await withSpan(telemetry.tracer(), "publication", { kind: SpanKind.PRODUCER }, () => harness.registry.startTrial(MODEL, published.manifest.model ?? {}, set, { setBy: `job-${version}` }));
    return version;
  }

  /** The verdict on `candidate`, once there is one. */
  async function verdict(candidate: string): Promise<PromotionDecision> {
    return waitFor(
      async () => (await harness.registry.decisions(MODEL)).find((d) => d.candidate?.version === candidate && d.verdict !== PromotionVerdict.TRIAL_STARTED),
      { timeoutMs: 30_000, intervalMs: 50, what: `a verdict on ${candidate}` },
    );
  }

  /**
   * Streams named `keys`, each at 30 fps, into `answers` (every answer with the time it came back) until
   * `done()` holds, then 10 frames more.
   */
  async function stream(keys: readonly string[], answers: Map<string, Answer[]>, done: () => boolean): Promise<void> {
    await Promise.all(keys.map(async (key) => {
      const got: Answer[] = [];
      answers.set(key, got);
      async function* frames() {
        let tail = 10;
        for (let i = 0; i < 900 && tail > 0; i++) {
          if (done()) tail--;
          yield jpegFrame(i, jpegs[i % jpegs.length] as Uint8Array);
          await sleep(33);
        }
      }
      for await (const response of harness.client.streamKeypoints(streamRequests({ streamName: key }, frames()))) {
        if (response.payload.case === "result") got.push({ result: response.payload.value, at: Date.now() });
      }
    }));
  }

  /**
   * Streams `keys`; once every stream is answered, starts a trial with `start`, and streams on until its verdict
   * (and, when promoted, until the candidate serves here).
   */
  async function streamThroughTrial(keys: readonly string[], start: () => Promise<string>): Promise<{ candidate: string; answers: Map<string, Answer[]>; decision: PromotionDecision }> {
    let candidate: string | undefined;
    let decision: PromotionDecision | undefined;
    const answers = new Map<string, Answer[]>();
    const promotedHere = (): boolean => decision?.verdict !== PromotionVerdict.PROMOTED || harness.inferencer.models.current?.version === candidate;
    const streaming = stream(keys, answers, () => decision !== undefined && promotedHere());
    try {
      await waitFor(() => keys.every((key) => (answers.get(key)?.length ?? 0) >= 3), { timeoutMs: 10_000, what: "every stream answered" });
      const started = await start();
      candidate = started;
      const decided = await verdict(started);
      decision = decided;
      await streaming;
      return { candidate: started, answers, decision: decided };
    } finally {
      // A failure above still ends the streams: done() holds once there is any decision.
      decision ??= create(PromotionDecisionSchema);
      await streaming;
    }
  }

  function versions(answers: readonly Answer[]): string[] {
    return answers.map((a) => a.result.model?.version ?? "");
  }

  /** Every frame answered, in order, none failed. */
  function expectEveryFrame(answers: Map<string, Answer[]>): void {
    for (const [key, got] of answers) {
      expect(got.map((a) => Number(a.result.frameId)), key).toEqual(got.map((_, i) => i));
      expect(got.every((a) => (a.result.status?.code ?? 0) === 0), key).toBe(true);
    }
  }

  async function servingVersion(): Promise<string | undefined> {
    return (await harness.registry.getServing(MODEL))?.record.model?.version;
  }

  it("a canary whose candidate fails to load is rolled back and leaves the serving model untouched", async () => {
    const { answers, decision } = await streamThroughTrial(["cam-a", "cam-b"], () => startTrial(serving, "corrupt", { mode: PromotionMode.CANARY, canaryFraction: 1 }, { servingBytes: randomBytes(4096) }));
    expect(decision.verdict).toBe(PromotionVerdict.ROLLED_BACK);
    expect(decision.reason).toMatch(/did not load: version corrupt is not a loadable ONNX model/);
    expect(decision.agreement?.frames).toBe(0n);
    await waitFor(() => harness.inferencer.trials.trial === undefined, { timeoutMs: 5000, what: "the trial to end" });
    expect(await servingVersion()).toBe(baseline);
    expect(harness.inferencer.models.current?.version).toBe(baseline);
    expectEveryFrame(answers);
    for (const got of answers.values()) expect(new Set(versions(got))).toEqual(new Set([baseline]));
    expect((await harness.registry.getCandidate(MODEL))?.record.model).toBeUndefined();
  });

  it("shadow: a broken candidate is rolled back early; clients never see its answers", async () => {
    const { candidate, answers, decision } = await streamThroughTrial(["cam-a", "cam-b"], () => startTrial(broken, "shadow-broken", { mode: PromotionMode.SHADOW }));
    expect(decision.verdict).toBe(PromotionVerdict.ROLLED_BACK);
    expect(decision.reason).toMatch(/cannot reach min_mean_oks 0\.8/);
    // The candidate is released: no trial left on the inferencer.
    await waitFor(() => harness.inferencer.trials.trial === undefined, { timeoutMs: 5000, what: "the trial to end" });
    // Rolled back as soon as the window could no longer pass, before it was full.
    expect(Number(decision.agreement?.frames)).toBeGreaterThan(0);
    expect(Number(decision.agreement?.frames)).toBeLessThan(WINDOW);
    expect(decision.agreement?.meanOks).toBeLessThan(0.5);
    expect(decision.agreement?.keypointOks).toHaveLength(17);
    expect(decision.decidedBy).not.toBe("");
    // The verdict's span links to the span that started the trial, and the registry's decision span is inside it.
    const started = telemetry.spansNamed("publication").at(-1);
    const verdictSpan = telemetry.spansNamed("trial.verdict").find((span) => span.attributes["poseloop.promotion.candidate"] === candidate);
    expect(verdictSpan?.attributes["poseloop.promotion.verdict"]).toBe("ROLLED_BACK");
    expect(verdictSpan?.links.map((link) => link.context.spanId)).toEqual([started?.spanContext().spanId]);
    const recorded = telemetry.spansNamed("registry.promotion_decision").filter((span) => span.parentSpanContext?.spanId === verdictSpan?.spanContext().spanId);
    expect(recorded).toHaveLength(1);
    expectEveryFrame(answers);
    for (const got of answers.values()) expect(new Set(versions(got))).toEqual(new Set([baseline]));
    expect(await servingVersion()).toBe(baseline);
    expect(harness.inferencer.models.current?.version).toBe(baseline);
  });

  it("canary: a broken candidate answers only its share of streams, then is rolled back", async () => {
    const keys = ["cam-0", "cam-1", "cam-2", "cam-3", "cam-4", "cam-5"];
    const fraction = 0.5;
    const share = keys.filter((key) => inCanaryShare(key, fraction));
    // The split of these keys is fixed (a hash): some streams in the canary, some out.
    expect(share.length).toBeGreaterThan(0);
    expect(share.length).toBeLessThan(keys.length);
    const { candidate, answers, decision } = await streamThroughTrial(keys, () => startTrial(broken, "canary-broken", { mode: PromotionMode.CANARY, canaryFraction: fraction }));
    expect(decision.verdict).toBe(PromotionVerdict.ROLLED_BACK);
    expect(decision.agreement?.meanOks).toBeLessThan(0.5);
    expectEveryFrame(answers);
    const sawCandidate = keys.filter((key) => versions(answers.get(key) ?? []).includes(candidate));
    expect(sawCandidate).toEqual(share);
    for (const key of keys) {
      const got = versions(answers.get(key) ?? []);
      expect(new Set(got).size <= 2 && got.every((v) => v === baseline || v === candidate), key).toBe(true);
      // After the rollback, the canary's streams are the serving model's again.
      expect(got.at(-1), key).toBe(baseline);
    }
    expect(await servingVersion()).toBe(baseline);
  });

  it("shadow: a good candidate is promoted; clients got the serving version until then, and no frame was lost at the swap", async () => {
    const { candidate, answers, decision } = await streamThroughTrial(["cam-a", "cam-b"], () => startTrial(serving, "shadow-good", { mode: PromotionMode.SHADOW }));
    expect(decision.verdict, decision.reason).toBe(PromotionVerdict.PROMOTED);
    expect(decision.agreement?.frames).toBe(BigInt(WINDOW));
    expect(decision.agreement?.meanOks).toBeCloseTo(1, 6);
    expect(decision.agreement?.candidateFailureRate).toBe(0);
    expect(decision.agreement?.candidateP95Ms).toBeGreaterThan(0);
    expect(await servingVersion()).toBe(candidate);
    expectEveryFrame(answers);
    const decidedAt = Number(decision.decidedAt?.seconds ?? 0n) * 1000 + (decision.decidedAt?.nanos ?? 0) / 1e6;
    for (const got of answers.values()) {
      expect(got.filter((a) => a.at < decidedAt).every((a) => a.result.model?.version === baseline)).toBe(true);
      const seen = versions(got);
      const switchAt = seen.indexOf(candidate);
      expect(switchAt).toBeGreaterThan(0);
      // One switch, never back.
      expect(seen.slice(0, switchAt).every((v) => v === baseline)).toBe(true);
      expect(seen.slice(switchAt).every((v) => v === candidate)).toBe(true);
    }
    baseline = candidate;
  });

  it("canary: a good candidate is promoted, its share of streams answered by it throughout", async () => {
    const keys = ["cam-0", "cam-1", "cam-2", "cam-3"];
    const fraction = 0.5;
    const { candidate, answers, decision } = await streamThroughTrial(keys, () => startTrial(serving, "canary-good", { mode: PromotionMode.CANARY, canaryFraction: fraction }));
    expect(decision.verdict, decision.reason).toBe(PromotionVerdict.PROMOTED);
    expect(decision.agreement?.meanOks).toBeCloseTo(1, 6);
    expect(await servingVersion()).toBe(candidate);
    expect(harness.inferencer.models.current?.version).toBe(candidate);
    expectEveryFrame(answers);
    for (const key of keys) {
      const seen = versions(answers.get(key) ?? []);
      const switchAt = seen.indexOf(candidate);
      // Never back to the old version once the candidate answered: a canary stream stays on it through the swap.
      expect(seen.slice(switchAt).every((v) => v === candidate), key).toBe(true);
      expect(seen.at(-1), key).toBe(candidate);
    }
  });
});
