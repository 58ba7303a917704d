import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { PromotionMode, PromotionPolicySchema, type PromotionDecision } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { DatasetKind, type DataSpec } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { GetPromotionPolicyResponseSchema, ListPromotionDecisionsResponseSchema, type GetPromotionPolicyResponse } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { Command, CommandContext, ParsedArgs } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { formatTable, modelRefText, timestampText } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";
import { agreementText, PROMOTION_MODES, promotionModeName, verdictName } from "./promotion-format.js";
import { readExperiment } from "./train-command.js";

/** The options that set a policy's fields, each going with --mode (a policy is set whole). */
const FIELD_OPTIONS = ["min-gain", "canary-fraction", "window", "min-oks", "max-failure-rate", "max-latency-ratio", "max-trial-seconds", "reference-cfg"] as const;

function modelArgument(ctx: CommandContext): string {
  const model = ctx.args.positionals[0]?.trim() ?? "";
  if (model === "") throw new UsageError("the model name is empty", ctx.args.command);
  return model;
}

/**
 * The policy of the command line. Ranges are the trainer's to check, so that one answer names every problem
 * of the policy; here only what is not a number at all is refused.
 */
export function policyFromArgs(args: ParsedArgs): MessageInitShape<typeof PromotionPolicySchema> {
  const raw = args.string("mode") ?? "";
  const mode = PROMOTION_MODES[raw.trim().toLowerCase()];
  if (mode === undefined) throw new UsageError(`--mode must be one of ${Object.keys(PROMOTION_MODES).join(", ")}, got "${raw}"`, "policy");
  const number = (name: (typeof FIELD_OPTIONS)[number]): number | undefined => args.number(name);
  const fields: [keyof MessageInitShape<typeof PromotionPolicySchema>, number | undefined][] = [
    ["minApGain", number("min-gain")],
    ["canaryFraction", number("canary-fraction")],
    ["windowFrames", args.int("window", 0, 0xffff_ffff)],
    ["minMeanOks", number("min-oks")],
    ["maxFailureRate", number("max-failure-rate")],
    ["maxLatencyRatio", number("max-latency-ratio")],
    ["maxTrialSeconds", args.int("max-trial-seconds", 0, 0xffff_ffff)],
  ];
  return { mode, ...Object.fromEntries(fields.filter(([, value]) => value !== undefined)) };
}

function dataText(data: DataSpec): string {
  if (data.kind === DatasetKind.SYNTHETIC) {
    const s = data.synthetic;
    return `synthetic (seed ${s?.seed ?? 0n}, ${s?.valImages ?? 0} images ${s?.imageWidth ?? 0}x${s?.imageHeight ?? 0})`;
  }
  if (data.kind === DatasetKind.COCO) return `coco ${data.coco?.root ?? ""}/${data.coco?.valAnnotations ?? ""}`;
  return "?";
}

const unbounded = (value: number, unit = ""): string => (value === 0 ? "0 (not bounded)" : `${value}${unit}`);

/** The lines `poseloop policy MODEL` prints: the mode, who set it, each field that applies, the trial under way. */
export function policyLines(model: string, response: GetPromotionPolicyResponse): string[] {
  const policy = response.policy ?? create(PromotionPolicySchema);
  const mode = policy.mode === PromotionMode.UNSPECIFIED ? PromotionMode.ALWAYS : policy.mode;
  const set = response.isDefault ? "the default: no policy was set" : `set by ${policy.setBy === "" ? "?" : policy.setBy} at ${timestampText(policy.updatedAt)}`;
  const lines = [`model ${model}: ${promotionModeName(mode)} (${set})`];
  const row = (name: string, value: string): void => void lines.push(`  ${name.padEnd(18)}${value}`);
  if (mode === PromotionMode.ALWAYS) row("promotes", "every publication that asks to be");
  if (mode === PromotionMode.IF_BETTER) {
    row("min AP gain", String(policy.minApGain));
    row("reference set", policy.referenceSet === undefined ? "each candidate's own job's validation set" : dataText(policy.referenceSet));
  }
  if (mode === PromotionMode.CANARY) row("canary fraction", String(policy.canaryFraction));
  if (mode === PromotionMode.CANARY || mode === PromotionMode.SHADOW) {
    row("window", `${policy.windowFrames} frames`);
    row("min mean OKS", String(policy.minMeanOks));
    row("max failure rate", String(policy.maxFailureRate));
    row("max latency ratio", unbounded(policy.maxLatencyRatio));
    row("max trial time", unbounded(policy.maxTrialSeconds, " s"));
  }
  const trial = response.trial;
  if (trial?.model !== undefined && trial.model.version !== "") {
    lines.push(`  trial under way: ${modelRefText(trial.model)} against ${modelRefText(trial.baseline)} since ${timestampText(trial.since)} (${promotionModeName(trial.policy?.mode ?? mode)})`);
  }
  return lines;
}

function apCell(value: number | undefined): string {
  return value === undefined ? "" : value.toFixed(3);
}

export const PROMOTION_TABLE_HEADER = ["TIME", "VERDICT", "MODE", "CANDIDATE", "SERVING", "CANDIDATE AP", "SERVING AP", "AGREEMENT", "BY", "REASON"] as const;

export function decisionRow(decision: PromotionDecision): string[] {
  return [
    timestampText(decision.decidedAt),
    verdictName(decision.verdict),
    promotionModeName(decision.mode),
    decision.candidate?.version ?? "",
    decision.serving?.version ?? "",
    apCell(decision.candidateAp),
    apCell(decision.servingAp),
    agreementText(decision.agreement),
    decision.decidedBy,
    decision.reason,
  ];
}

export const policyCommand: Command = {
  name: "policy",
  summary: "Show a model's promotion policy, or set it (always, if-better, canary, shadow).",
  synopsis: "<model> [--mode always|if-better|canary|shadow [--min-gain X] [--reference-cfg FILE] [--canary-fraction F] [--window N] ...]",
  description: [
    "A job's publication serves only if it passes its model's policy. always: every one. if-better: its AP",
    "on the reference set beats the serving version's by more than --min-gain; the reference set is the",
    "DATASET section of --reference-cfg (an experiment file, its validation split), else each candidate's own",
    "job's validation set; both versions are measured by the trainer's validation pipeline. canary: the",
    "inferencers serve it to --canary-fraction of the streams (by stream key) and compare it with the serving",
    "model over --window frames; shadow: they run it on a copy of the frames without answering. A canary or",
    "shadow candidate is promoted when its mean OKS against the serving model reaches --min-oks with a",
    "failure rate of at most --max-failure-rate (and a p95 latency of at most --max-latency-ratio times the",
    "serving model's, 0: not bounded), and rolled back when it cannot (or when --max-trial-seconds pass first).",
    "Defaults for canary and shadow: fraction 0.1, window 300 frames, min OKS 0.8, max failure rate 0.01.",
    "With --mode the policy is replaced whole (fields not given take their defaults); setting one needs the",
    "admin role. Every problem of a policy is reported at once. poseloop promotions MODEL shows the decisions;",
    "poseloop promote and poseloop rollback override them by hand.",
  ].join("\n"),
  positionals: { min: 1, max: 1 },
  examples: [
    "poseloop policy demo",
    "poseloop policy demo --mode if-better --min-gain 0.005",
    "poseloop policy demo --mode if-better --reference-cfg experiments/synthetic/lite_128x96_demo.yaml",
    "poseloop policy demo --mode canary --canary-fraction 0.2 --window 600 --min-oks 0.85",
    "poseloop policy demo --mode always",
  ],
  options: {
    mode: { type: "string", value: "MODE", help: "set the policy: always, if-better, canary or shadow" },
    "min-gain": { type: "string", value: "X", help: "if-better: AP the candidate must gain over the serving version (default 0)" },
    "reference-cfg": { type: "string", value: "FILE", help: "if-better: an experiment file whose DATASET section is the reference set" },
    "canary-fraction": { type: "string", value: "F", help: "canary: share of the streams the candidate answers, in (0, 1] (default 0.1)" },
    window: { type: "string", value: "N", help: "canary, shadow: frames compared before a verdict (default 300)" },
    "min-oks": { type: "string", value: "X", help: "canary, shadow: least mean OKS against the serving model (default 0.8)" },
    "max-failure-rate": { type: "string", value: "X", help: "canary, shadow: most failed frames over frames (default 0.01)" },
    "max-latency-ratio": { type: "string", value: "X", help: "canary, shadow: most p95 latency over the serving model's (default 0: not bounded)" },
    "max-trial-seconds": { type: "string", value: "S", help: "canary, shadow: roll back a trial that has not decided by then (default 0: no limit)" },
  },
  async run(ctx) {
    const model = modelArgument(ctx);
    if (!ctx.args.has("mode")) {
      const given = FIELD_OPTIONS.filter((name) => ctx.args.has(name));
      if (given.length > 0) throw new UsageError(`--${given[0]} sets a field of a policy: give the whole policy with --mode`, "policy");
      const response = await ctx.trainer().getPromotionPolicy(model, { signal: ctx.signal });
      if (ctx.json) writeJsonDocument(ctx.out, protoJson(GetPromotionPolicyResponseSchema, response));
      else ctx.out.lines(policyLines(model, response));
      return ExitCode.OK;
    }
    const policy = policyFromArgs(ctx.args);
    const cfg = ctx.args.string("reference-cfg");
    const referenceExperimentYaml = cfg === undefined ? undefined : await readExperiment(ctx.resolvePath(cfg), cfg);
    const stored = await ctx.trainer().setPromotionPolicy(model, policy, { signal: ctx.signal, ...(referenceExperimentYaml === undefined ? {} : { referenceExperimentYaml }) });
    const response = create(GetPromotionPolicyResponseSchema, { policy: stored, isDefault: false });
    if (ctx.json) writeJsonDocument(ctx.out, protoJson(GetPromotionPolicyResponseSchema, response));
    else ctx.out.lines(policyLines(model, response));
    return ExitCode.OK;
  },
};

export const promotionsCommand: Command = {
  name: "promotions",
  summary: "List a model's promotion decisions, newest first: verdict, both versions, both APs, agreement, why.",
  synopsis: "<model>",
  description: [
    "Each publication that asked to be promoted, each canary or shadow verdict and each promotion or rollback",
    "by hand is a decision, kept by the registry (its last 64) and announced on NATS. CANDIDATE AP and SERVING",
    "AP are the if-better comparison's, on the reference set; AGREEMENT is a canary or shadow trial's.",
  ].join("\n"),
  positionals: { min: 1, max: 1 },
  examples: ["poseloop promotions demo", "poseloop promotions demo --json"],
  options: {},
  async run(ctx) {
    const model = modelArgument(ctx);
    const decisions = await ctx.trainer().listPromotionDecisions(model, { signal: ctx.signal });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(ListPromotionDecisionsResponseSchema, create(ListPromotionDecisionsResponseSchema, { decisions })));
      return ExitCode.OK;
    }
    // Only the table on stdout (`| tail -n +2` sees decisions); that there are none is a message.
    if (decisions.length === 0) ctx.err.line(`no promotion decisions for ${model}`);
    else ctx.out.lines(formatTable(PROMOTION_TABLE_HEADER, decisions.map(decisionRow)));
    return ExitCode.OK;
  },
};
