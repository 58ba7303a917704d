import { spawn } from "node:child_process";
import { basename } from "node:path";
import { AppError, Code, type Env } from "@poseloop/core";
import type { Architecture } from "@poseloop/train";
import { engineEnv, PYTORCH_ENGINE_DIR } from "./python.js";

/** A tensor of the zoo model a pretrained file must fill: libs/train's `TensorSpec` fits. */
export interface PretrainedTarget {
  readonly name: string;
  readonly shape: readonly number[];
}

export interface PretrainedOptions {
  /** The interpreter with torch (the one `probeTorch` found). */
  readonly python: string;
  /** The folder holding the `poseloop_torch` package; default PYTORCH_ENGINE_DIR. */
  readonly enginePath?: string;
  /** The state_dict file (.pth / .pt), an absolute path. */
  readonly file: string;
  readonly architecture: Architecture;
  /** Every param and buffer of the model: `[...defineModel(config).registry.params, ...registry.buffers]`. */
  readonly targets: readonly PretrainedTarget[];
  /**
   * Name prefixes to keep at the zoo's initialization whatever the file holds ("final_layer." when the
   * keypoint count differs); a target they cover is never loaded and never a problem.
   */
  readonly skip?: readonly string[];
  /** Reading a W48 file takes seconds; default 120 s. */
  readonly timeoutMs?: number;
  /** How messages name the file (MODEL.PRETRAINED as the user wrote it); default its base name. */
  readonly displayName?: string;
  /** The child's environment (PATH resolves a bare `python3`); default process.env. */
  readonly env?: Env;
}

export interface PretrainedWeights {
  /** Every target the file filled, by name; targets left out (skipped) keep the zoo's initialization. */
  readonly weights: Map<string, Float32Array>;
  /** File keys deliberately not loaded: ImageNet classification heads, keys under a skip prefix. */
  readonly ignored: readonly string[];
  /** Targets left at their initialization: under a skip prefix, or a pose head an ImageNet backbone lacks. */
  readonly skipped: readonly string[];
}

/** A failure message lists at most this many problems; `AppError.problems` holds all of them. */
const MESSAGE_PROBLEMS = 20;
/** A failure message quotes at most this much of the engine's stderr. */
const STDERR_CHARS = 300;

/**
 * Reads a PyTorch state_dict file (HRNet / SimpleBaseline reference names, the zoo's own, MMPose checkpoints)
 * onto the zoo model's tensors with `python -m poseloop_torch.pretrained`. Throws FAILED_PRECONDITION listing
 * every problem (missing, mis-shaped and unknown keys, anything in the pickle that is not a tensor), or naming
 * why Python could not do it; DEADLINE_EXCEEDED after `timeoutMs`.
 */
export async function readPretrained(options: PretrainedOptions): Promise<PretrainedWeights> {
  const shown = options.displayName ?? basename(options.file);
  const subject = `MODEL.PRETRAINED ${shown}`;
  const request = {
    file: options.file,
    architecture: options.architecture,
    targets: options.targets.map((t) => [t.name, [...t.shape]]),
    skip: [...(options.skip ?? [])],
  };
  const run = await runImporter(options, JSON.stringify(request), subject);
  const { header, body } = splitAnswer(run, subject);
  if (header.ok !== true) {
    const problems = Array.isArray(header.problems) ? header.problems.map(String) : ["the importer gave no reason"];
    throw problemsError(subject, problems);
  }
  return { weights: tensorsOf(header, body, options.targets, subject), ignored: strings(header.ignored), skipped: strings(header.skipped) };
}

/** `readPretrained`'s weights: every target the file filled, by name. */
export async function loadPretrained(options: PretrainedOptions): Promise<Map<string, Float32Array>> {
  return (await readPretrained(options)).weights;
}

interface ImporterRun {
  readonly stdout: Buffer;
  readonly stderr: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

function runImporter(options: PretrainedOptions, request: string, subject: string): Promise<ImporterRun> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let stderr = "";
    let settled = false;
    const child = spawn(options.python, ["-m", "poseloop_torch.pretrained"], {
      env: engineEnv(options.env ?? process.env, options.enginePath ?? PYTORCH_ENGINE_DIR),
      stdio: ["pipe", "pipe", "pipe"],
    });
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outcome();
    };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      settle(() => reject(new AppError(Code.DEADLINE_EXCEEDED, `${subject}: not read within ${Math.round(timeoutMs / 1000)} s`)));
    }, timeoutMs);
    child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-8192);
    });
    // A child that dies before reading the request: its exit says why.
    child.stdin.on("error", () => undefined);
    child.on("error", (error: NodeJS.ErrnoException) => {
      const why = error.code === "ENOENT" ? `${options.python} not found` : `${options.python} cannot be started`;
      settle(() => reject(new AppError(Code.FAILED_PRECONDITION, `${subject}: ${why}`, { cause: error })));
    });
    child.on("close", (code, signal) => settle(() => resolve({ stdout: Buffer.concat(chunks), stderr, code, signal })));
    child.stdin.end(request);
  });
}

interface AnswerHeader {
  readonly ok?: unknown;
  readonly problems?: unknown;
  readonly ignored?: unknown;
  readonly skipped?: unknown;
  readonly tensors?: unknown;
}

function splitAnswer(run: ImporterRun, subject: string): { header: AnswerHeader; body: Buffer } {
  const newline = run.stdout.indexOf(0x0a);
  let header: AnswerHeader | undefined;
  if (newline >= 0) {
    try {
      const value = JSON.parse(run.stdout.subarray(0, newline).toString("utf8")) as unknown;
      if (typeof value === "object" && value !== null && !Array.isArray(value)) header = value;
    } catch {
      header = undefined;
    }
  }
  if (header === undefined) {
    const how = run.signal === null ? `exited with code ${String(run.code)}` : `was killed by ${run.signal}`;
    const detail = lastLine(run.stderr);
    throw new AppError(Code.FAILED_PRECONDITION, `${subject}: python ${how} without an answer${detail === "" ? "" : `: ${detail}`}`, {
      cause: new Error(run.stderr),
    });
  }
  return { header, body: run.stdout.subarray(newline + 1) };
}

function tensorsOf(header: AnswerHeader, body: Buffer, targets: readonly PretrainedTarget[], subject: string): Map<string, Float32Array> {
  const wanted = new Map(targets.map((t) => [t.name, t.shape]));
  const listed = Array.isArray(header.tensors) ? (header.tensors as unknown[]) : [];
  const weights = new Map<string, Float32Array>();
  const broken = (why: string) => new AppError(Code.INTERNAL, `${subject}: the importer's answer is broken: ${why}`);
  let offset = 0;
  for (const entry of listed) {
    const [name, shape] = Array.isArray(entry) ? (entry as unknown[]) : [];
    const expected = typeof name === "string" ? wanted.get(name) : undefined;
    if (expected === undefined || !Array.isArray(shape) || !sameShape(shape, expected) || weights.has(name as string)) {
      throw broken(`unexpected tensor ${JSON.stringify(entry)}`);
    }
    const count = expected.reduce((a, b) => a * b, 1);
    const bytes = count * 4;
    if (offset + bytes > body.length) throw broken(`${String(name)} cut short (${body.length} bytes after the header)`);
    const values = new Float32Array(count);
    // Little-endian float32 on the wire and in memory (every platform the trainer runs on).
    new Uint8Array(values.buffer).set(body.subarray(offset, offset + bytes));
    weights.set(name as string, values);
    offset += bytes;
  }
  if (offset !== body.length) throw broken(`${body.length - offset} bytes after the last tensor`);
  return weights;
}

function problemsError(subject: string, problems: readonly string[]): AppError {
  const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
  const shown = problems.slice(0, MESSAGE_PROBLEMS).join("; ");
  const more = problems.length > MESSAGE_PROBLEMS ? `; and ${problems.length - MESSAGE_PROBLEMS} more` : "";
  return new AppError(Code.FAILED_PRECONDITION, `${subject}: ${count}: ${shown}${more}`, { problems });
}

function sameShape(shape: readonly unknown[], expected: readonly number[]): boolean {
  return shape.length === expected.length && shape.every((d, i) => d === expected[i]);
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

function lastLine(text: string): string {
  const line = (text.trim().split("\n").at(-1) ?? "").trim();
  return line.length > STDERR_CHARS ? `${line.slice(0, STDERR_CHARS - 3)}...` : line;
}
