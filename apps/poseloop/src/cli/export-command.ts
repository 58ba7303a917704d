import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { Command } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { modelRefText } from "./job-format.js";
import { writeJsonDocument } from "./json-output.js";
import { valTarget } from "./val-command.js";

export const exportCommand: Command = {
  name: "export",
  summary: "Write a published version's ONNX model and its manifest YAML (what `poseloop import` reads).",
  synopsis: "<model>[@<version>] [--out DIR] [--precision int8|fp32]",
  description: [
    "Writes DIR/<model>-<version>[.int8].onnx and DIR/<model>-<version>.yaml; without a version, the one serving",
    "now. The served file unless --precision names one (int8 only when the version passed its int8 gate).",
  ].join("\n"),
  positionals: { min: 1, max: 1 },
  examples: ["poseloop export demo --out models/", "poseloop export demo@<version> --precision fp32"],
  options: {
    out: { type: "string", value: "DIR", help: "where to write the files (default: the current directory)" },
    precision: { type: "string", value: "int8|fp32", help: "which file of the version (default: the served one)" },
  },
  async run(ctx) {
    const target = valTarget(ctx.args.positionals[0], undefined, undefined).model;
    if (target === undefined) throw new UsageError("name the model: poseloop export MODEL[@VERSION]", "export");
    const precision = ctx.args.string("precision");
    if (precision !== undefined && precision !== "int8" && precision !== "fp32") throw new UsageError(`--precision takes int8 or fp32, got "${precision}"`, "export");
    const response = await ctx.trainer().exportModel(target.name, {
      signal: ctx.signal,
      ...(target.version === undefined || target.version === "" ? {} : { version: target.version }),
      ...(precision === undefined ? {} : { precision }),
    });
    const dir = ctx.resolvePath(ctx.args.string("out") ?? ".");
    const base = `${target.name}-${response.version?.version ?? "unknown"}`;
    const modelFile = join(dir, `${base}${response.precision === Precision.INT8 ? ".int8" : ""}.onnx`);
    const manifestFile = join(dir, `${base}.yaml`);
    await mkdir(dir, { recursive: true });
    await writeFile(modelFile, response.model);
    await writeFile(manifestFile, response.manifestYaml);
    const what = `${modelRefText(response.version)} (${response.precision === Precision.INT8 ? "int8" : "fp32"}, ${response.model.byteLength} bytes)`;
    if (ctx.json) writeJsonDocument(ctx.out, { version: response.version?.version ?? "", digest: response.version?.digest ?? "", model: modelFile, manifest: manifestFile });
    else ctx.out.line(`exported ${what} to ${modelFile} and ${manifestFile}`);
    return ExitCode.OK;
  },
};
