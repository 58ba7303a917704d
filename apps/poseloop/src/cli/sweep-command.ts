import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code, sleep } from "@poseloop/core";
import { create } from "@bufbuild/protobuf";
import { ListSweepsResponseSchema, SweepSchema, SweepState, type Sweep } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { parseKeyValue, type Command, type CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { protoJson, writeJsonDocument, writeJsonLine } from "./json-output.js";
import { SWEEP_LIST_HEADER, sweepChanges, sweepRow, sweepStateName, sweepSummary } from "./sweep-format.js";
import { formatTable } from "./job-format.js";
import { plotFileName } from "./results-format.js";
import { SWEEP_FLAG_KEYS, sweepRequest, type SweepFlag } from "./sweep-request.js";
import { readExperiment } from "./train-command.js";

/** Pause before watching a sweep again after its watch ended early (a trainer draining for a restart). */
const REWATCH_DELAY_MS = 500;
const MAX_REWATCH_FAILURES = 5;

export const sweepCommand: Command = {
  name: "sweep",
  summary: "Sweep hyper-parameters: each trial a training job on the queue, hopeless ones stopped early, a summary by AP.",
  synopsis: "--cfg FILE [--lr V,V,...] [--batch N,N,...] [--set KEY=V,V,...]... [--search grid|random --trials N] [--early-stop none|median|asha] [--stages lr,batch,aug] [--follow] [--plot DIR] | show SWEEP | cancel SWEEP",
  description: [
    "Each trial is the experiment file with the trial's values as overrides, queued as a normal job (labelled",
    "with the sweep), so every trainer of the bus runs trials in parallel. The trainer validates every trial",
    "before queueing any and lists every problem. Swept keys:",
    "  --lr TRAIN.LR, --batch TRAIN.BATCH_SIZE_PER_GPU, --rot-factor DATASET.ROT_FACTOR,",
    "  --scale-factor DATASET.SCALE_FACTOR; --set KEY=V1,V2 sweeps any key (one value fixes it for every trial).",
    "--search random draws --trials distinct combinations (per stage) with --seed.",
    "--early-stop median stops a trial whose best AP by an epoch is below the median of the other trials' at",
    "that epoch (after --grace epochs, default 1); asha keeps the top 1/η (--eta, default 3) at epochs 1, η, η², ...",
    "--stages lr,batch,aug runs the stages in that order (the guide's: learning rate, then batch size, then",
    "augmentation), fixing each stage's best values for the next. A stage without values takes the trainer's",
    "defaults: lr 0.3x/1x/3x the experiment's TRAIN.LR; batch 0.5x/1x/2x its TRAIN.BATCH_SIZE_PER_GPU; aug",
    "DATASET.ROT_FACTOR 0/20/40 with DATASET.SCALE_FACTOR 0.15/0.35.",
    "--follow prints the trials' progress and ends with the summary: a row per trial by best AP, the best",
    "marked with *. `poseloop sweep show SWEEP` prints it later; `poseloop sweeps` lists the sweeps.",
  ].join("\n"),
  examples: [
    "poseloop sweep --cfg experiments/synthetic/lite_128x96_demo.yaml --lr 1e-4,3e-4,1e-3 --follow",
    "poseloop sweep --cfg experiments/synthetic/lite_128x96_demo.yaml --lr 3e-4,1e-3 --batch 16,32 --early-stop median --set TRAIN.END_EPOCH=20",
    "poseloop sweep --cfg experiments/synthetic/lite_128x96_demo.yaml --stages lr,batch,aug --early-stop asha --follow --plot ./sweep-plots",
    "poseloop sweep show <sweep-id> --plot ./sweep-plots",
  ],
  positionals: { min: 0, max: 2 },
  options: {
    cfg: { type: "string", value: "FILE", help: "experiment file every trial starts from (YAML, HRNet layout)" },
    lr: { type: "string", value: "V,V,...", help: "learning rates to sweep (TRAIN.LR)" },
    batch: { type: "string", value: "N,N,...", help: "batch sizes to sweep (TRAIN.BATCH_SIZE_PER_GPU)" },
    "rot-factor": { type: "string", value: "V,V,...", help: "rotation augmentation in degrees (DATASET.ROT_FACTOR)" },
    "scale-factor": { type: "string", value: "V,V,...", help: "scale augmentation (DATASET.SCALE_FACTOR)" },
    set: { type: "string", multiple: true, value: "KEY=V,V,...", help: "sweep any experiment key; a single value fixes it" },
    search: { type: "string", value: "grid|random", help: "every combination (default) or --trials drawn at random" },
    trials: { type: "string", value: "N", help: "random search: trials per stage" },
    seed: { type: "string", value: "N", help: "random search: the seed (default 0)" },
    "early-stop": { type: "string", value: "RULE", help: "none (default), median or asha" },
    grace: { type: "string", value: "N", help: "median rule: epochs before a trial may be stopped (default 1)" },
    eta: { type: "string", value: "N", help: "ASHA: the reduction factor η (default 3)" },
    stages: { type: "string", value: "lr,batch,aug", help: "run these stages in order, each fixing its best values" },
    name: { type: "string", value: "NAME", help: "the sweep's name (default: the experiment's NAME)" },
    label: { type: "string", multiple: true, value: "KEY=VALUE", help: "label every trial's job" },
    follow: { type: "boolean", help: "follow the sweep to its end and print the summary" },
    plot: { type: "string", value: "DIR", help: "save PNG plots of best AP against each swept key into DIR" },
  },
  async run(ctx) {
    const [action, sweepId] = ctx.args.positionals;
    if (action === "show" || action === "cancel") {
      if (sweepId === undefined || sweepId.trim() === "") throw new UsageError(`poseloop sweep ${action} needs a sweep id`, "sweep");
      return action === "show" ? showSweep(ctx, sweepId.trim()) : cancelSweep(ctx, sweepId.trim());
    }
    if (action !== undefined) throw new UsageError(`unexpected argument "${action}" (poseloop sweep --cfg FILE ..., sweep show SWEEP, sweep cancel SWEEP)`, "sweep");
    return startSweep(ctx);
  },
};

export const sweepsCommand: Command = {
  name: "sweeps",
  summary: "List hyper-parameter sweeps, newest first.",
  synopsis: "",
  positionals: { min: 0, max: 0 },
  examples: ["poseloop sweeps", "poseloop sweeps --json | jq -r '.sweeps[].sweepId'"],
  options: {},
  async run(ctx) {
    const sweeps = await ctx.trainer().listSweeps({ signal: ctx.signal });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(ListSweepsResponseSchema, create(ListSweepsResponseSchema, { sweeps })));
      return ExitCode.OK;
    }
    if (sweeps.length === 0) ctx.err.line("no sweeps");
    else ctx.out.lines(formatTable(SWEEP_LIST_HEADER, sweeps.map(sweepRow)));
    return ExitCode.OK;
  },
};

async function startSweep(ctx: CommandContext): Promise<number> {
  const { args } = ctx;
  const flags: Partial<Record<SweepFlag, string>> = {};
  for (const flag of Object.keys(SWEEP_FLAG_KEYS) as SweepFlag[]) {
    const value = args.string(flag);
    if (value !== undefined) flags[flag] = value;
  }
  const int = (name: string, min: number): number | undefined => args.int(name, min);
  const [trials, seed, grace, eta] = [int("trials", 1), int("seed", 0), int("grace", 1), int("eta", 2)];
  const search = args.string("search");
  const earlyStop = args.string("early-stop");
  const stages = args.string("stages");
  const request = sweepRequest({
    flags,
    sets: args.strings("set"),
    ...(search === undefined ? {} : { search }),
    ...(trials === undefined ? {} : { trials }),
    ...(seed === undefined ? {} : { seed }),
    ...(earlyStop === undefined ? {} : { earlyStop }),
    ...(grace === undefined ? {} : { grace }),
    ...(eta === undefined ? {} : { eta }),
    ...(stages === undefined ? {} : { stages }),
  });
  const cfg = args.need("cfg");
  const labels = Object.fromEntries(args.strings("label").map((pair) => parseKeyValue(pair, "--label", "sweep")));
  const experimentYaml = await readExperiment(ctx.resolvePath(cfg), cfg);
  const sweep = await ctx.trainer().startSweep({ ...request, experimentYaml, labels, name: args.string("name") ?? "", signal: ctx.signal });
  if (ctx.json) {
    if (args.flag("follow")) writeJsonLine(ctx.out, { type: "started", sweep: protoJson(SweepSchema, sweep) });
    else writeJsonDocument(ctx.out, protoJson(SweepSchema, sweep));
  } else {
    const stageText = sweep.stages.length > 1 ? ` in ${sweep.stages.length} stages (${sweep.stages.map((s) => s.name).join(", ")})` : "";
    (args.flag("follow") ? ctx.err : ctx.out).line(`sweep ${sweep.sweepId} started: ${sweep.trials.length} trials${stageText}`);
  }
  if (!args.flag("follow")) {
    if (!ctx.json) ctx.err.line(`poseloop sweep show ${sweep.sweepId} prints its summary`);
    return ExitCode.OK;
  }
  return followSweep(ctx, sweep);
}

async function followSweep(ctx: CommandContext, started: Sweep): Promise<number> {
  const trainer = ctx.trainer();
  let last: Sweep | undefined;
  const report = (sweep: Sweep): void => {
    if (ctx.json) writeJsonLine(ctx.out, { type: "update", sweep: protoJson(SweepSchema, sweep) });
    else for (const line of sweepChanges(last, sweep)) ctx.err.line(line);
    last = sweep;
  };
  if (!ctx.json) ctx.err.line(`following sweep ${started.sweepId} (Ctrl-C stops following; the sweep goes on)`);
  report(started);
  let failures = 0;
  try {
    while (last === undefined || last.state === SweepState.RUNNING) {
      try {
        for await (const sweep of trainer.watchSweep(started.sweepId, { signal: ctx.signal })) {
          failures = 0;
          report(sweep);
        }
      } catch (error) {
        if (ctx.signal.aborted || !AppError.is(error, Code.UNAVAILABLE) || ++failures > MAX_REWATCH_FAILURES) throw error;
      }
      // A watch ends with its sweep, or when a trainer drains: then it is watched again.
      if (last?.state === SweepState.RUNNING) await sleep(REWATCH_DELAY_MS, ctx.signal);
    }
  } catch (error) {
    if (ctx.signal.aborted && AppError.is(error, Code.CANCELLED)) {
      ctx.err.line(`poseloop: stopped following sweep ${started.sweepId}; it goes on (poseloop sweep show ${started.sweepId})`);
      return ExitCode.INTERRUPTED;
    }
    throw error;
  }
  return finish(ctx, last, "finished");
}

async function showSweep(ctx: CommandContext, sweepId: string): Promise<number> {
  const sweep = await ctx.trainer().getSweep(sweepId, { signal: ctx.signal });
  return finish(ctx, sweep, "sweep");
}

/** The summary (and the plots with --plot); the exit code says whether the sweep succeeded. */
async function finish(ctx: CommandContext, sweep: Sweep, type: "finished" | "sweep"): Promise<number> {
  const plotDir = ctx.args.string("plot");
  const saved: string[] = [];
  if (plotDir !== undefined) {
    const { plots } = await ctx.trainer().getSweepPlots(sweep.sweepId, { signal: ctx.signal });
    const dir = ctx.resolvePath(plotDir);
    await mkdir(dir, { recursive: true });
    for (const plot of plots) {
      const path = join(dir, plotFileName(plot.name, saved.length));
      await writeFile(path, plot.png);
      saved.push(path);
    }
  }
  if (ctx.json) {
    const document = { sweep: protoJson(SweepSchema, sweep), saved };
    if (type === "finished") writeJsonLine(ctx.out, { type, ...document });
    else writeJsonDocument(ctx.out, document);
  } else {
    ctx.out.lines([`sweep ${sweep.sweepId} (${sweep.name}): ${sweepStateName(sweep.state)}${sweep.message === "" ? "" : ` — ${sweep.message}`}`, ...sweepSummary(sweep)]);
    for (const path of saved) ctx.err.line(`saved ${path}`);
  }
  if (sweep.state === SweepState.SUCCEEDED || (type === "sweep" && sweep.state === SweepState.RUNNING)) return ExitCode.OK;
  if (!ctx.json) ctx.err.line(`poseloop: sweep ${sweep.sweepId} ${sweepStateName(sweep.state)}`);
  return ExitCode.FAILURE;
}

async function cancelSweep(ctx: CommandContext, sweepId: string): Promise<number> {
  const sweep = await ctx.trainer().cancelSweep(sweepId, { signal: ctx.signal, reason: "poseloop sweep cancel" });
  if (ctx.json) writeJsonDocument(ctx.out, protoJson(SweepSchema, sweep));
  else ctx.out.line(`sweep ${sweep.sweepId} ${sweepStateName(sweep.state)}`);
  return ExitCode.OK;
}
