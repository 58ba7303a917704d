import { readFile } from "node:fs/promises";
import { ImportModelResponseSchema, type ImportModelResponse } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { Command } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { manifestText } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";
import { cocoDataSpec } from "./val-command.js";

/**
 * An import checks the model (a warm-up batch) and, with --val-set, measures its AP, and with --quantize runs the
 * int8 gate's attempts: minutes for a large model on a big set, so the 30 s default deadline would report a
 * failure for an import that then happens. --timeout still sets one.
 */
const IMPORT_TIMEOUT_MS = 30 * 60_000;

/**
 * What the import made: the version, its keypoints and whether it serves; or the version an earlier import of the
 * same model bytes, manifest and sets made, which was not published again.
 */
export function importedText(response: ImportModelResponse, skipPromotion: boolean): string {
  const schema = response.manifest?.keypointSchema;
  const keypoints = schema === undefined || schema.keypointNames.length === 0 ? "" : `, ${schema.keypointNames.length} keypoints (${schema.name || "custom"})`;
  const gate = response.quantization === undefined || response.quantization.message === "" ? "" : `; int8 gate: ${response.quantization.message}`;
  if (response.alreadyImported) {
    // Promotion was asked for unless skipped: the version serves now, whether it did before or this made it.
    const serving = skipPromotion ? "not promoted (--skip-promotion)" : response.promoted ? "serving now" : "serving already";
    return `already imported as ${manifestText(response.manifest)}${keypoints} (the same model bytes, manifest and sets): nothing published, ${serving}`;
  }
  return `imported ${manifestText(response.manifest)}${keypoints}: ${response.promoted ? "serving now" : "published, not serving"}${gate}`;
}

export const importCommand: Command = {
  name: "import",
  summary: "Import a pose (or detector) model exported elsewhere, with its manifest, as a new version.",
  synopsis: "<model.onnx> --name NAME --manifest FILE [--quantize --calibration-set ANNOTATIONS] [--ap-gate --val-set ANNOTATIONS]",
  description: [
    "The trainer checks the model against its manifest the way an inferencer checks a load (input and output names,",
    "output shapes for the codec and keypoint schema, a warm-up batch): every problem is listed and nothing is",
    "published then. The manifest's format is in the README (\"Bring your own model\"); `poseloop export` writes it.",
    "Sets are COCO keypoint annotation files under the trainer's data root, as `poseloop val --data` takes them;",
    "their people are cropped by their labelled boxes. The model travels in one request: at most the trainer's",
    "POSELOOP_GRPC_MAX_MESSAGE_BYTES (16 MiB by default). Needs the admin role.",
    "Importing again what a version of NAME already holds (the same model bytes, manifest, --quantize and sets)",
    "publishes nothing: that version is named, and made to serve unless --skip-promotion.",
  ].join("\n"),
  positionals: { min: 1, max: 1 },
  examples: [
    "poseloop import <model>.onnx --name mypose --manifest <manifest>.yaml",
    "poseloop import <model>.onnx --name mypose --manifest <manifest>.yaml --ap-gate --val-set <dataset>/annotations/person_keypoints_val2017.json --min-ap 0.6",
    "poseloop import <model>.onnx --name mypose --manifest <manifest>.yaml --quantize --calibration-set <dataset>/annotations/person_keypoints_train2017.json --val-set <dataset>/annotations/person_keypoints_val2017.json",
  ],
  options: {
    name: { type: "string", value: "NAME", help: "the model name to publish under" },
    manifest: { type: "string", value: "FILE", help: "the manifest YAML (input, keypoints, codec, outputs)" },
    quantize: { type: "boolean", help: "publish an int8 model too, if it passes the AP gate (needs --calibration-set and --val-set)" },
    "calibration-set": { type: "string", value: "ANNOTATIONS", help: "COCO keypoint file whose crops calibrate int8" },
    "ap-gate": { type: "boolean", help: "measure COCO AP on --val-set first (with --min-ap: refuse a model below it)" },
    "val-set": { type: "string", value: "ANNOTATIONS", help: "COCO keypoint file to measure AP on" },
    "min-ap": { type: "string", value: "AP", help: "the least AP (0-1) the served model must reach on --val-set" },
    "max-ap-drop": { type: "string", value: "POINTS", help: "the most AP points int8 may lose (default 1.0)" },
    "skip-promotion": { type: "boolean", help: "publish without making it serve" },
    reason: { type: "string", value: "TEXT", help: "why (kept in the registry's history)" },
  },
  async run(ctx) {
    const file = ctx.args.positionals[0] ?? "";
    const name = ctx.args.string("name");
    const manifestFile = ctx.args.string("manifest");
    if (name === undefined || name.trim() === "") throw new UsageError("name the model: --name NAME", "import");
    if (manifestFile === undefined) throw new UsageError("give the model's manifest: --manifest FILE", "import");
    const quantize = ctx.args.flag("quantize");
    const calibration = ctx.args.string("calibration-set");
    const validation = ctx.args.string("val-set");
    if (quantize && calibration === undefined) throw new UsageError("--quantize needs --calibration-set ANNOTATIONS", "import");
    if (!quantize && calibration !== undefined) throw new UsageError("--calibration-set goes with --quantize", "import");
    if ((ctx.args.flag("ap-gate") || quantize) && validation === undefined) throw new UsageError(`${quantize ? "--quantize" : "--ap-gate"} needs --val-set ANNOTATIONS`, "import");
    if (validation !== undefined && !ctx.args.flag("ap-gate") && !quantize) throw new UsageError("--val-set goes with --ap-gate or --quantize", "import");
    const number = (flag: string): number | undefined => {
      const raw = ctx.args.string(flag);
      if (raw === undefined) return undefined;
      const value = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(value)) throw new UsageError(`--${flag} takes a number, got "${raw}"`, "import");
      return value;
    };
    const minAp = number("min-ap");
    const maxApDrop = number("max-ap-drop");
    const read = async (path: string, what: string): Promise<Buffer> => {
      try {
        return await readFile(ctx.resolvePath(path));
      } catch (error) {
        throw new UsageError(`cannot read the ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, "import");
      }
    };
    const model = await read(file, "model");
    const manifestYaml = (await read(manifestFile, "manifest")).toString("utf8");
    const reason = ctx.args.string("reason");
    const skipPromotion = ctx.args.flag("skip-promotion");
    const response = await ctx.trainer().importModel({
      modelName: name.trim(),
      model: new Uint8Array(model.buffer, model.byteOffset, model.byteLength),
      manifestYaml,
      quantize,
      skipPromotion,
      signal: ctx.signal,
      ...(ctx.args.has("timeout") ? {} : { timeoutMs: IMPORT_TIMEOUT_MS }),
      ...(calibration === undefined ? {} : { calibration: cocoDataSpec(calibration, undefined, undefined) }),
      ...(validation === undefined ? {} : { validation: cocoDataSpec(validation, undefined, undefined) }),
      ...(minAp === undefined ? {} : { minAp }),
      ...(maxApDrop === undefined ? {} : { maxApDrop }),
      ...(reason === undefined ? {} : { reason }),
    });
    if (ctx.json) writeJsonDocument(ctx.out, protoJson(ImportModelResponseSchema, response));
    else ctx.out.line(importedText(response, skipPromotion));
    return ExitCode.OK;
  },
};
