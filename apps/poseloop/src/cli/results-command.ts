import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { writeJsonDocument } from "./json-output.js";
import { plotFileName, resultsRecords, resultsTable } from "./results-format.js";

export const resultsCommand: Command = {
  name: "results",
  summary: "Print a job's results.csv (a row per epoch: losses, LR, AP/AR, timings); --plot saves its PNG plots.",
  synopsis: "<job> [--plot DIR] [--csv]",
  description:
    "The results are written with each checkpoint, so they cover the epochs up to the job's last one: a running job's grow epoch by epoch, a resumed job's continue its curves. The plots show the loss and the learning rate per logged step, AP per validated epoch, and the per-keypoint misses of the last validation with the left/right swaps among them in red.",
  positionals: { min: 1, max: 1 },
  examples: ["poseloop results <job-id> --plot ./plots", "poseloop results <job-id> --csv > results.csv"],
  options: {
    plot: { type: "string", value: "DIR", help: "save the PNG plots into DIR (created if missing)" },
    csv: { type: "boolean", help: "print results.csv as it is stored instead of a table" },
  },
  async run(ctx) {
    const jobId = ctx.args.positionals[0]?.trim() ?? "";
    if (jobId === "") throw new UsageError("the job id is empty", ctx.args.command);
    const plotDir = ctx.args.string("plot");
    const results = await ctx.trainer().getJobResults(jobId, { signal: ctx.signal });
    const saved: string[] = [];
    if (plotDir !== undefined) {
      const dir = ctx.resolvePath(plotDir);
      await mkdir(dir, { recursive: true });
      for (const [i, plot] of results.plots.entries()) {
        const path = join(dir, plotFileName(plot.name, i));
        await writeFile(path, plot.png);
        saved.push(path);
      }
    }
    if (ctx.json) {
      writeJsonDocument(ctx.out, { jobId, checkpointId: results.checkpointId, epochs: resultsRecords(results.csv), plots: results.plots.map((p) => p.name), saved });
      return ExitCode.OK;
    }
    if (ctx.args.flag("csv")) ctx.out.raw(results.csv);
    else ctx.out.lines(resultsTable(results.csv));
    ctx.err.line(`as of checkpoint ${results.checkpointId}`);
    for (const path of saved) ctx.err.line(`saved ${path}`);
    return ExitCode.OK;
  },
};
