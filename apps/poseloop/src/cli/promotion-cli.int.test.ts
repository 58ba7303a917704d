import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { loadConfig, startTrainer, type TrainerProcess } from "@poseloop/trainer";
import { silentLogger } from "@poseloop/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliRunner } from "../testing/cli-runner.js";
import { tinyExperiment } from "../testing/tiny-experiment.js";

// An if-better policy end to end: a real nats-server, a real trainer over gRPC training and measuring with
// onnxruntime, and the CLI a user drives it with. "Worse" and "better" are deterministic (the same seeds each
// time) and as cheap as they can be: the tiny net keeps AP 0 for its first ~250 updates whatever the recipe,
// so "better" is the cheapest run measured to leave 0 (400 updates with warm-up and cosine decay, ~10 s:
// AP 0.026 on its 8 validation pictures) and "worse" is one update.
const model = `promotion-cli-${process.pid}`;

/** One person per picture, no occlusion, light augmentation: what a short run learns fastest. */
function recipe(name: string): string {
  return tinyExperiment(model, name)
    .replace("MAX_PEOPLE: 2", "MAX_PEOPLE: 1\n    OCCLUSION: 0")
    .replace("DATASET:\n", "DATASET:\n  FLIP: true\n  ROT_FACTOR: 0\n  SCALE_FACTOR: 0.1\n")
    .replace("  LR_STEP: [1]\n", "")
    .replace("ENABLED: true", "ENABLED: false");
}

/** One optimizer step (8 training images, a batch of 8, one epoch): a model that has barely moved. */
const WEAK = recipe("weak").replace("TRAIN_IMAGES: 40", "TRAIN_IMAGES: 8").replace("END_EPOCH: 2", "END_EPOCH: 1");
/** 400 updates (400 pictures, 8 epochs) at LR 6e-3 after a 100-update warm-up, validated every other epoch. */
const STRONG = recipe("strong")
  .replace("TRAIN_IMAGES: 40", "TRAIN_IMAGES: 400")
  .replace("  LR: 0.001", "  LR: 0.006")
  .replace("END_EPOCH: 2", "END_EPOCH: 8\n  VALIDATE_EVERY: 2\n  LR_SCHEDULE: cosine\n  WARMUP_STEPS: 100\n  WARMUP_FACTOR: 0.001");

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: TrainerProcess;
let env: Record<string, string>;

const { cli, cliJson } = cliRunner(() => ({ env, cwd: dir.path }));

/**
 * Trains an experiment file to its end: the version it published, the event line that says what became of it,
 * and the job's closing summary.
 */
async function train(file: string): Promise<{ version: string; line: string; summary: string }> {
  const { code, stdout, stderr } = await cli(["train", "--cfg", file]);
  expect(code, stderr).toBe(0);
  const line = new RegExp(`^published ${model}@(\\S+) .*$`, "m").exec(stderr);
  expect(line, stderr).not.toBeNull();
  return { version: line?.[1] ?? "", line: line?.[0] ?? "", summary: stdout };
}

interface DecisionJson {
  verdict: string;
  mode: string;
  candidate?: { version: string };
  serving?: { version: string };
  candidateAp?: number;
  servingAp?: number;
  referenceSet?: string;
  reason: string;
}

beforeAll(async () => {
  nats = await NatsServer.start();
  dir = await makeTempDir("poseloop-promotion-cli-");
  await Promise.all([
    writeFile(join(dir.path, "weak.yaml"), WEAK),
    writeFile(join(dir.path, "strong.yaml"), STRONG),
  ]);
  trainer = await startTrainer(
    loadConfig({
      POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
      POSELOOP_NATS_URL: nats.url,
      POSELOOP_DATA_ROOT: join(dir.path, "data"),
      POSELOOP_WORK_DIR: join(dir.path, "work"),
      POSELOOP_LOG_LEVEL: "error",
      // Only onnxruntime jobs here: no torch import for the PyTorch probe.
      POSELOOP_PYTHON: "/bin/false",
    }),
    silentLogger,
  );
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.address.port}` };
}, 60_000);

afterAll(async () => {
  await trainer?.stop();
  await nats?.dispose();
  await dir?.remove();
});

describe("poseloop policy and promotions against a real trainer", () => {
  const versions = { weak: "", strong: "" };

  it("a policy with impossible bounds: exit 1, every problem listed, nothing stored", async () => {
    const { code, stderr } = await cli(["policy", model, "--mode", "canary", "--canary-fraction", "1.5", "--min-oks", "2", "--min-gain", "1", "--reference-cfg", "strong.yaml"]);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^poseloop: invalid promotion policy \(4 problems\)/m);
    for (const problem of [/min_ap_gain 1 must be in \[0, 1\)/, /reference_set: only an if-better policy/, /canary_fraction 1\.5 must be in \(0, 1\]/, /min_mean_oks 2 must be in \[0, 1\]/]) {
      expect(stderr).toMatch(problem);
    }
    const shown = await cli(["policy", model]);
    expect(shown.stdout.split("\n")[0]).toBe(`model ${model}: always (the default: no policy was set)`);
  });

  it("if-better refuses a worse model and accepts a better one; promotions shows both APs", async () => {
    // Nothing serves yet: the first publication serves whatever the policy.
    const first = await train("weak.yaml");
    versions.weak = first.version;
    expect(first.line).toMatch(/: serving now$/);

    // The reference set: the DATASET section of the better run's file (its validation pictures), on which both
    // versions of each comparison are measured.
    const set = await cli(["policy", model, "--mode", "if-better", "--min-gain", "0.005", "--reference-cfg", "strong.yaml"]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(new RegExp(`^model ${model}: if-better \\(set by .+\\)$`, "m"));
    expect(set.stdout).toMatch(/^ {2}reference set +synthetic \(seed \d+, 8 images 128x96\)$/m);

    const better = await train("strong.yaml");
    versions.strong = better.version;
    expect(better.line).toMatch(/: serving now \(AP \d\.\d{3,4} is above serving \d\.\d{3,4} \+ 0\.005\)$/);

    const worse = await train("weak.yaml");
    expect(worse.line).toMatch(/: not promoted: AP \d\.\d{3,4} is not above serving \d\.\d{3,4} \+ 0\.005$/);
    expect(worse.summary).toMatch(new RegExp(`^ {2}published ${model}@${worse.version} — not promoted: AP \\d\\.\\d{3,4} is not above serving`, "m"));

    const { decisions } = await cliJson<{ decisions: DecisionJson[] }>(["promotions", model, "--json"]);
    expect(decisions.map((d) => d.verdict)).toEqual(["PROMOTION_VERDICT_REJECTED", "PROMOTION_VERDICT_PROMOTED", "PROMOTION_VERDICT_PROMOTED"]);
    const [rejected, promoted] = decisions;
    expect(rejected).toMatchObject({ mode: "PROMOTION_MODE_IF_BETTER", candidate: { version: worse.version }, serving: { version: versions.strong }, referenceSet: expect.stringMatching(/^synthetic \(seed \d+, 8 images 128x96\)$/) as string });
    expect(promoted).toMatchObject({ candidate: { version: versions.strong }, serving: { version: versions.weak } });
    // The serving version's AP in the refusal is the one measured when it was the candidate, on the same set.
    expect(rejected?.servingAp).toBeCloseTo(promoted?.candidateAp ?? -1, 6);
    expect(rejected?.candidateAp).toBeCloseTo(promoted?.servingAp ?? -1, 6);
    expect((rejected?.candidateAp ?? 1) + 0.005).toBeLessThan(rejected?.servingAp ?? 0);

    // Still the better version serving, and the table names both APs and why.
    expect((await cliJson<{ policy: unknown; trial?: unknown }>(["policy", model, "--json"])).trial).toBeUndefined();
    const table = await cli(["promotions", model]);
    const [header = "", row = ""] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^TIME +VERDICT +MODE +CANDIDATE +SERVING +CANDIDATE AP +SERVING AP +AGREEMENT +BY +REASON$/);
    expect(row).toContain(`rejected  if-better  ${worse.version}  ${versions.strong}`);
    expect(row).toMatch(/AP \d\.\d{3,4} is not above serving \d\.\d{3,4} \+ 0\.005$/);
  }, 90_000);

  it("promote MODEL VERSION: an admin's override serves the refused version, and the log keeps it", async () => {
    const { code, stdout, stderr } = await cli(["promote", model, versions.weak, "--reason", "checked by hand"]);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain(`serving ${model}@${versions.weak}`);
    const { decisions } = await cliJson<{ decisions: DecisionJson[] }>(["promotions", model, "--json"]);
    expect(decisions[0]).toMatchObject({ verdict: "PROMOTION_VERDICT_PROMOTED", candidate: { version: versions.weak }, serving: { version: versions.strong }, reason: "promoted by hand: checked by hand" });
  });
});
