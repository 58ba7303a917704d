import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, extname } from "node:path";
import { performance } from "node:perf_hooks";
import { AppError, Code, isCode } from "@poseloop/core";
import type { KeypointSchema } from "@poseloop/pose";
import { FrameResultSchema, ImageFormat, type FrameResult } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { decodeImage, encodeJpeg, encodePng } from "@poseloop/vision";
import { encodedFormatOf, type PersonBox } from "@poseloop/client";
import type { CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { modelRefText } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";
import { annotatePicture, schemaForKeypoints, ServingSchemas } from "./pose-annotation.js";
import { formatMs } from "./stream-stats.js";

const OUTPUT_ENCODERS: Readonly<Record<string, "png" | "jpeg">> = { ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg" };

/** Runs `poseloop detect`: see detectCommand. */
export async function runDetect(ctx: CommandContext): Promise<number> {
  const { args } = ctx;
  const input = args.positionals[0]!;
  const out = args.string("out");
  const encoder = out === undefined ? undefined : OUTPUT_ENCODERS[extname(out).toLowerCase()];
  if (out !== undefined && encoder === undefined) throw new UsageError(`--out ${out}: write the annotated image as .png or .jpg`, "detect");
  const model = args.string("model");
  const minKeypointScore = args.number("min-score", { min: 0, max: 1 });
  const maxPersons = args.int("max-persons", 1);
  const personBoxes = args.strings("box").map(parseBox);

  const bytes = await readFile(ctx.resolvePath(input)).catch((error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code;
    throw new AppError(code === "ENOENT" ? Code.NOT_FOUND : Code.INVALID_ARGUMENT, `cannot read ${input}: ${code === "ENOENT" ? "no such file" : (error as Error).message}`, { cause: error });
  });
  if (encodedFormatOf(bytes) === ImageFormat.UNSPECIFIED) throw new AppError(Code.INVALID_ARGUMENT, `${input} is not a JPEG, PNG or WebP image`);

  // Names and limbs come from the serving model's manifest, asked for while the image is on its way.
  const schemas = out !== undefined || !ctx.json ? new ServingSchemas(ctx.inference(), ctx.signal) : undefined;
  schemas?.prefetch(model ?? "");
  const started = performance.now();
  const result = await ctx.inference().detect({ encoded: bytes, personBoxes }, {
    signal: ctx.signal,
    flipTest: args.flag("flip-test"),
    ...(model === undefined ? {} : { modelName: model }),
    ...(minKeypointScore === undefined ? {} : { minKeypointScore }),
    ...(maxPersons === undefined ? {} : { maxPersons }),
  });
  const elapsedMs = performance.now() - started;
  const status = result.status;
  if (status !== undefined && status.code !== 0) {
    throw new AppError(isCode(status.code) ? status.code : Code.UNKNOWN, `${input}: ${status.message}`);
  }
  const schema = await schemas?.schemaFor(result.model);

  if (out !== undefined && encoder !== undefined) {
    const picture = await decodeImage(bytes);
    const annotated = annotatePicture(picture, result.persons, {
      caption: `${modelRefText(result.model)}  ${result.persons.length} ${result.persons.length === 1 ? "person" : "persons"}`,
      ...(minKeypointScore === undefined ? {} : { minScore: minKeypointScore }),
      ...(schema === undefined ? {} : { schema }),
    });
    const output = ctx.resolvePath(out);
    await mkdir(dirname(output), { recursive: true });
    await writeFile(output, encoder === "png" ? await encodePng(annotated) : await encodeJpeg(annotated, 90));
  }

  if (ctx.json) writeJsonDocument(ctx.out, protoJson(FrameResultSchema, result));
  else {
    ctx.out.lines(detectionLines(input, result, elapsedMs, schema));
    // Stdout is the keypoints alone, for whatever reads them.
    if (out !== undefined) ctx.err.line(`wrote ${out}`);
  }
  return ExitCode.OK;
}

/** `--box X,Y,W,H`: a person box in pixels, width and height > 0. */
export function parseBox(text: string): PersonBox {
  const parts = text.split(",").map((part) => part.trim());
  const numbers = parts.map(Number);
  if (parts.length !== 4 || parts.some((part) => part === "") || numbers.some((n) => !Number.isFinite(n))) {
    throw new UsageError(`--box ${text}: expected X,Y,W,H (four numbers in pixels)`, "detect");
  }
  const [x, y, width, height] = numbers as [number, number, number, number];
  if (width <= 0 || height <= 0) throw new UsageError(`--box ${text}: width and height must be > 0`, "detect");
  return { x, y, width, height };
}

/**
 * The text answer of detect: a header, then per person its score, box and keypoints, named as `schema` (the
 * serving model's manifest) names them, else as the keypoint count implies.
 */
export function detectionLines(input: string, result: FrameResult, elapsedMs: number, schema?: KeypointSchema): string[] {
  const count = result.persons.length;
  const size = result.imageWidth > 0 ? ` (${result.imageWidth}x${result.imageHeight})` : "";
  const server = result.timings === undefined || result.timings.totalUs === 0 ? "" : `, server ${formatMs(result.timings.totalUs / 1000)}`;
  const lines = [`${input}${size}: ${count} ${count === 1 ? "person" : "persons"}, model ${modelRefText(result.model)}, ${formatMs(elapsedMs)}${server}`];
  result.persons.forEach((person, index) => {
    const box = person.bbox;
    const boxText = box === undefined ? "" : `, box ${box.x.toFixed(0)},${box.y.toFixed(0)} ${box.width.toFixed(0)}x${box.height.toFixed(0)}`;
    const track = person.trackId === undefined ? "" : `, track ${person.trackId}`;
    lines.push(`person ${index + 1}: score ${person.score.toFixed(2)}${boxText}${track}`);
    const names = schemaForKeypoints(person.keypoints.length, schema).names;
    const width = Math.max(...names.map((name) => name.length));
    person.keypoints.forEach((keypoint, k) => {
      lines.push(`  ${(names[k] ?? `k${k}`).padEnd(width)}  ${keypoint.x.toFixed(1).padStart(7)} ${keypoint.y.toFixed(1).padStart(7)}  ${keypoint.score.toFixed(2)}`);
    });
  });
  return lines;
}
