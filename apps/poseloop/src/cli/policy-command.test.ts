import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { PromotionDecisionSchema, PromotionMode, PromotionVerdict } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { JobSchema, JobState, ModelPublicationSchema, type SetPromotionPolicyRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startFakeTrainer, type FakeServer, type FakeTrainerScript } from "@poseloop/client/testing";
import { captureIo } from "../testing/capture-io.js";
import { formatJobSummary, publicationText } from "./job-format.js";
import { runCli } from "./run-cli.js";

const cleanups: (() => Promise<void> | void)[] = [];
let dir: string;
beforeEach(async () => {
  const temp = await makeTempDir("poseloop-policy-cli-");
  cleanups.push(temp.remove);
  dir = temp.path;
  await writeFile(join(dir, "reference.yaml"), "DATASET:\n  DATASET: synthetic\n");
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function trainer(script: FakeTrainerScript = {}): Promise<FakeServer> {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  return server;
}

async function cli(server: FakeServer, argv: readonly string[]) {
  const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address }, cwd: dir });
  const code = await runCli(argv, io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText() };
}

describe("poseloop policy", () => {
  it("shows the policy in effect with the fields its mode uses", async () => {
    const server = await trainer({ policy: { mode: PromotionMode.IF_BETTER, minApGain: 0.005, setBy: "token:ab12", updatedAt: { seconds: 1_796_000_000n } } });
    const { code, stdout } = await cli(server, ["policy", "demo"]);
    expect(code).toBe(0);
    expect(stdout.trimEnd().split("\n")).toEqual([
      "model demo: if-better (set by token:ab12 at 2026-11-30T00:53:20Z)",
      "  min AP gain       0.005",
      "  reference set     each candidate's own job's validation set",
    ]);
    expect(server.calls.map((call) => call.method)).toEqual(["getPromotionPolicy"]);
  });

  it("sets the whole policy from --mode and its fields, sending the reference file for the trainer to read", async () => {
    const server = await trainer();
    const { code, stdout } = await cli(server, ["policy", "demo", "--mode", "if-better", "--min-gain", "0.01", "--reference-cfg", "reference.yaml"]);
    expect(code).toBe(0);
    const request = server.calls[0]?.request as SetPromotionPolicyRequest;
    expect(request.modelName).toBe("demo");
    expect(request.policy).toMatchObject({ mode: PromotionMode.IF_BETTER, minApGain: 0.01, canaryFraction: 0 });
    expect(request.referenceExperimentYaml).toBe("DATASET:\n  DATASET: synthetic\n");
    expect(stdout).toMatch(/^model demo: if-better \(set by token:fake at /);

    await cli(server, ["policy", "demo", "--mode", "canary", "--canary-fraction", "0.2", "--window", "600", "--max-trial-seconds", "120"]);
    expect((server.calls[1]?.request as SetPromotionPolicyRequest).policy).toMatchObject({ mode: PromotionMode.CANARY, canaryFraction: 0.2, windowFrames: 600, maxTrialSeconds: 120 });
  });

  it("refuses a field without --mode and an unknown mode, asking the trainer nothing", async () => {
    const server = await trainer();
    const field = await cli(server, ["policy", "demo", "--min-gain", "0.01"]);
    expect(field.code).toBe(2);
    expect(field.stderr).toMatch(/^poseloop: --min-gain sets a field of a policy: give the whole policy with --mode$/m);
    const mode = await cli(server, ["policy", "demo", "--mode", "best"]);
    expect(mode.code).toBe(2);
    expect(mode.stderr).toMatch(/--mode must be one of always, if-better, canary, shadow, got "best"/);
    expect(server.calls).toEqual([]);
  });
});

describe("poseloop promotions", () => {
  it("lists the decisions newest first with both APs, the agreement and why", async () => {
    const server = await trainer({
      decisions: [
        {
          candidate: { name: "demo", version: "v3" },
          serving: { name: "demo", version: "v2" },
          mode: PromotionMode.IF_BETTER,
          verdict: PromotionVerdict.REJECTED,
          candidateAp: 0.137,
          servingAp: 0.235,
          reason: "AP 0.137 is not above serving 0.235 + 0.005",
          decidedBy: "job-2",
          decidedAt: { seconds: 1_796_000_000n },
        },
        {
          candidate: { name: "demo", version: "v2" },
          serving: { name: "demo", version: "v1" },
          mode: PromotionMode.SHADOW,
          verdict: PromotionVerdict.PROMOTED,
          agreement: { frames: 300n, meanOks: 0.91, candidateFailureRate: 0, servingFailureRate: 0 },
          reason: "mean OKS 0.910 ≥ 0.8",
          decidedBy: "inferencer-1",
          decidedAt: { seconds: 1_795_990_000n },
        },
      ],
    });
    const { code, stdout } = await cli(server, ["promotions", "demo"]);
    expect(code).toBe(0);
    const [header, rejected, promoted] = stdout.trimEnd().split("\n");
    expect(header).toMatch(/^TIME +VERDICT +MODE +CANDIDATE +SERVING +CANDIDATE AP +SERVING AP +AGREEMENT +BY +REASON$/);
    expect(rejected?.split(/ {2,}/)).toEqual(["2026-11-30T00:53:20Z", "rejected", "if-better", "v3", "v2", "0.137", "0.235", "job-2", "AP 0.137 is not above serving 0.235 + 0.005"]);
    expect(promoted).toContain("OKS 0.910 over 300 frames, failures 0.0% vs 0.0%");

    const json = JSON.parse((await cli(server, ["promotions", "demo", "--json"])).stdout) as { decisions: { verdict: string; candidateAp?: number }[] };
    expect(json.decisions[0]).toMatchObject({ verdict: "PROMOTION_VERDICT_REJECTED", candidateAp: 0.137 });
  });

  it("says on stderr when there are none", async () => {
    const { code, stdout, stderr } = await cli(await trainer(), ["promotions", "demo"]);
    expect(code).toBe(0);
    expect(stdout).toBe("");
    expect(stderr).toBe("no promotion decisions for demo\n");
  });
});

describe("poseloop promote", () => {
  it("makes the version serve through PublishCheckpoint's version target, as rollback --to does", async () => {
    const server = await trainer({ serving: { name: "demo", version: "v3" } });
    const { code, stdout } = await cli(server, ["promote", "demo", "v3", "--reason", "checked by hand"]);
    expect(code).toBe(0);
    expect(stdout).toBe("demo: serving demo@v3 (lite) (before: demo@v1)\n");
    expect(server.calls[0]?.request).toMatchObject({ target: { case: "version", value: { name: "demo", version: "v3" } }, reason: "checked by hand" });
  });
});

describe("a publication's line", () => {
  const manifest = { model: { name: "demo", version: "v3" }, architecture: "lite", precision: 3, metrics: { ap: 0.137 } };
  const line = (init: Parameters<typeof create<typeof ModelPublicationSchema>>[1]) => publicationText(create(ModelPublicationSchema, init));

  it("says why an if-better policy did not promote it, and why it did", () => {
    const rejected = create(PromotionDecisionSchema, { mode: PromotionMode.IF_BETTER, verdict: PromotionVerdict.REJECTED, candidateAp: 0.137, servingAp: 0.235, reason: "AP 0.137 is not above serving 0.235 + 0.005" });
    expect(line({ manifest, promoted: false, checkpointId: "e0002-s0000496", decision: rejected })).toBe(
      "demo@v3 (int8, lite, AP 0.137) from checkpoint e0002-s0000496: not promoted: AP 0.137 is not above serving 0.235 + 0.005",
    );
    const promoted = create(PromotionDecisionSchema, { mode: PromotionMode.IF_BETTER, verdict: PromotionVerdict.PROMOTED, candidateAp: 0.25, servingAp: 0.235, reason: "AP 0.250 is above serving 0.235 + 0.005" });
    expect(line({ manifest, promoted: true, decision: promoted })).toBe("demo@v3 (int8, lite, AP 0.137): serving now (AP 0.250 is above serving 0.235 + 0.005)");
  });

  it("is as before for always (or no policy) and for a skipped promotion; a trial names its baseline", () => {
    const always = create(PromotionDecisionSchema, { mode: PromotionMode.ALWAYS, verdict: PromotionVerdict.PROMOTED, reason: "no promotion policy set: every publication is promoted" });
    expect(line({ manifest, promoted: true, decision: always })).toBe("demo@v3 (int8, lite, AP 0.137): serving now");
    expect(line({ manifest, promoted: false })).toBe("demo@v3 (int8, lite, AP 0.137): published, not serving (promotion skipped)");
    const trial = create(PromotionDecisionSchema, { mode: PromotionMode.CANARY, verdict: PromotionVerdict.TRIAL_STARTED, serving: { name: "demo", version: "v2" } });
    expect(line({ manifest, promoted: false, decision: trial })).toBe("demo@v3 (int8, lite, AP 0.137): on canary trial against demo@v2 (the inferencers promote it or roll it back)");
  });
});

describe("a job's summary", () => {
  it("says why a publication was not promoted, and nothing more for one promoted without a comparison", () => {
    const job = create(JobSchema, {
      jobId: "job-2",
      state: JobState.SUCCEEDED,
      published: [
        { name: "demo", version: "v3" },
        { name: "demo", version: "v4" },
      ],
      promotions: [
        { candidate: { name: "demo", version: "v3" }, mode: PromotionMode.IF_BETTER, verdict: PromotionVerdict.REJECTED, candidateAp: 0.137, servingAp: 0.235, reason: "AP 0.137 is not above serving 0.235 + 0.005" },
        { candidate: { name: "demo", version: "v4" }, mode: PromotionMode.ALWAYS, verdict: PromotionVerdict.PROMOTED, reason: "policy always: every publication is promoted" },
      ],
    });
    const lines = formatJobSummary(job);
    expect(lines).toContain("  published demo@v3 — not promoted: AP 0.137 is not above serving 0.235 + 0.005");
    expect(lines).toContain("  published demo@v4");
  });
});
