import { spawn } from "node:child_process";
import { delimiter } from "node:path";
import { fileURLToPath } from "node:url";
import type { Env } from "@poseloop/core";

/**
 * The folder holding the `poseloop_torch` package. This file is src/engines/python.ts under tsx and
 * dist/engines/python.js when built; both sit two levels below services/trainer, beside pytorch/.
 */
export const PYTORCH_ENGINE_DIR: string = fileURLToPath(new URL("../../pytorch/", import.meta.url));

/** The protocol version of services/trainer/pytorch/PROTOCOL.md this trainer speaks. */
export const ENGINE_PROTOCOL_VERSION = 1;

/**
 * Interpreters tried, in order, when POSELOOP_PYTHON is unset: the first `python3` on PATH may be a
 * virtual environment or pyenv build without torch while the system's has it (Debian's python3-torch).
 */
export const DEFAULT_PYTHON_CANDIDATES: readonly string[] = Object.freeze(["python3", "/usr/bin/python3"]);

/** The engine's `hello` line (PROTOCOL.md, "Start"). */
export interface TorchHello {
  readonly type: "hello";
  readonly protocol: number;
  readonly torch?: string;
  readonly python?: string;
  readonly cuda?: { readonly available: boolean; readonly devices: readonly { readonly index: number; readonly name: string; readonly memoryBytes?: number }[] };
  readonly bf16?: boolean;
  readonly distributed?: { readonly gloo: boolean; readonly nccl: boolean };
  /** Set when torch cannot be imported (the probe then exits 3). */
  readonly error?: string;
}

export type TorchProbe =
  | { readonly ok: true; /** The interpreter that answered; jobs run the engine with it. */ readonly python: string; readonly hello: TorchHello }
  | { readonly ok: false; /** Why, for every interpreter tried ("python3: torch cannot be imported: ...; /usr/bin/python3: ..."). */ readonly reason: string };

export interface ProbeOptions {
  /** POSELOOP_PYTHON: the only interpreter tried; empty or absent: DEFAULT_PYTHON_CANDIDATES. */
  readonly python?: string;
  /** Per interpreter; importing torch takes seconds. Default 20 s. */
  readonly timeoutMs?: number;
  /** Where `poseloop_torch` is; default PYTORCH_ENGINE_DIR (tests point it at a fake). */
  readonly engineDir?: string;
}

/** The child's environment: `env` with the engine folder first on PYTHONPATH. */
export function engineEnv(env: Env, engineDir: string = PYTORCH_ENGINE_DIR): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined) out[name] = value;
  const existing = env["PYTHONPATH"];
  out["PYTHONPATH"] = existing === undefined || existing === "" ? engineDir : `${engineDir}${delimiter}${existing}`;
  return out;
}

/**
 * Finds a Python that can run the PyTorch engine: runs `<python> -m poseloop_torch --probe` for POSELOOP_PYTHON,
 * or else for each default candidate until one answers with a hello naming a torch version. `env` is the
 * environment the child gets (PATH resolves `python3`). Never throws: a failure says why for each candidate.
 */
export function probeTorch(env: Env, options: ProbeOptions = {}): Promise<TorchProbe> {
  // Importing torch takes seconds: trainers of one process (tests, an embedded deployment) probe an
  // interpreter once, not once each. The key holds everything the answer depends on.
  const key = JSON.stringify([options.python ?? "", options.engineDir ?? PYTORCH_ENGINE_DIR, env["PATH"] ?? "", env["PYTHONPATH"] ?? "", options.timeoutMs ?? 20_000]);
  let probe = probes.get(key);
  if (probe === undefined) {
    probe = probeCandidates(env, options);
    probes.set(key, probe);
  }
  return probe;
}

const probes = new Map<string, Promise<TorchProbe>>();

async function probeCandidates(env: Env, options: ProbeOptions): Promise<TorchProbe> {
  const candidates = options.python !== undefined && options.python !== "" ? [options.python] : DEFAULT_PYTHON_CANDIDATES;
  const reasons: string[] = [];
  for (const python of candidates) {
    const result = await probeOne(python, engineEnv(env, options.engineDir), options.timeoutMs ?? 20_000);
    if ("hello" in result) return { ok: true, python, hello: result.hello };
    reasons.push(`${python}: ${result.reason}`);
  }
  return { ok: false, reason: reasons.join("; ") };
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  const line = (lines.at(-1) ?? "").trim();
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

function parseHello(stdout: string): TorchHello | undefined {
  for (const line of stdout.split("\n")) {
    try {
      const value = JSON.parse(line) as unknown;
      if (typeof value === "object" && value !== null && (value as { type?: unknown }).type === "hello") return value as TorchHello;
    } catch {
      // Not the hello line; PROTOCOL.md allows nothing else on stdout, but a probe only needs the one line.
    }
  }
  return undefined;
}

function probeOne(python: string, env: Record<string, string>, timeoutMs: number): Promise<{ hello: TorchHello } | { reason: string }> {
  return new Promise((resolve) => {
    let stdout = "";
    let stderr = "";
    let settled = false;
    const finish = (result: { hello: TorchHello } | { reason: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const child = spawn(python, ["-m", "poseloop_torch", "--probe"], { env, stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      finish({ reason: `no answer to --probe within ${Math.round(timeoutMs / 1000)} s` });
    }, timeoutMs);
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      if (stdout.length < 1 << 20) stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-4096);
    });
    child.on("error", (error: NodeJS.ErrnoException) => {
      finish({ reason: error.code === "ENOENT" ? "not found" : `cannot be started: ${error.message}` });
    });
    child.on("close", (code, signal) => {
      const hello = parseHello(stdout);
      if (hello?.error !== undefined) finish({ reason: `torch cannot be imported: ${hello.error}` });
      else if (hello !== undefined && hello.protocol !== ENGINE_PROTOCOL_VERSION) {
        finish({ reason: `its poseloop_torch speaks protocol ${String(hello.protocol)}, this trainer speaks ${ENGINE_PROTOCOL_VERSION}` });
      } else if (hello !== undefined && code === 0 && typeof hello.torch === "string") finish({ hello });
      else {
        const why = signal === null ? `exited with code ${String(code)}` : `was killed by ${signal}`;
        const detail = lastLine(stderr);
        finish({ reason: `${why} without a hello line${detail === "" ? "" : `: ${detail}`}` });
      }
    });
  });
}
