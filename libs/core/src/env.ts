import { AppError } from "./app-error.js";
import { didYouMean } from "./did-you-mean.js";

export type Env = Readonly<Record<string, string | undefined>>;

interface Common<T> {
  /** Used when the variable is unset or empty. Without a default the variable is required. */
  default?: T;
}

/**
 * Reads configuration from an environment map, collecting every problem instead of stopping at the first,
 * so that `loadConfig(env)` can report all of them at once with `done()`.
 *
 * ```ts
 * const r = new EnvReader(env);
 * const port = r.int("POSELOOP_PORT", { default: 50051, min: 0, max: 65535 });
 * const url = r.string("POSELOOP_NATS_URL", { default: "" });
 * r.done("trainer configuration"); // throws AppError INVALID_ARGUMENT listing every problem
 * ```
 */
export class EnvReader {
  readonly #env: Env;
  readonly #problems: string[] = [];
  readonly #names = new Set<string>();

  constructor(env: Env) {
    this.#env = env;
  }

  /** Problems found so far. */
  get problems(): readonly string[] {
    return this.#problems;
  }

  /** Every variable name asked for so far, set or not: the names this configuration knows. */
  get names(): ReadonlySet<string> {
    return this.#names;
  }

  /** Records a problem found by a check that spans several variables. */
  problem(message: string): void {
    this.#problems.push(message);
  }

  string(name: string, options: Common<string> & { pattern?: RegExp; hint?: string } = {}): string {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, "");
    if (options.pattern !== undefined && !options.pattern.test(raw)) {
      this.#problems.push(`${name}=${quote(raw)} ${options.hint ?? `does not match ${String(options.pattern)}`}`);
    }
    return raw;
  }

  int(name: string, options: Common<number> & { min?: number; max?: number } = {}): number {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, 0);
    const value = /^[-+]?\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(value)) {
      this.#problems.push(`${name}=${quote(raw)} is not an integer`);
      return options.default ?? 0;
    }
    this.#range(name, value, options.min, options.max);
    return value;
  }

  number(name: string, options: Common<number> & { min?: number; max?: number } = {}): number {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, 0);
    const value = Number(raw);
    if (!Number.isFinite(value)) {
      this.#problems.push(`${name}=${quote(raw)} is not a number`);
      return options.default ?? 0;
    }
    this.#range(name, value, options.min, options.max);
    return value;
  }

  bool(name: string, options: Common<boolean> = {}): boolean {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, false);
    const lower = raw.toLowerCase();
    if (["1", "true", "yes", "on"].includes(lower)) return true;
    if (["0", "false", "no", "off"].includes(lower)) return false;
    this.#problems.push(`${name}=${quote(raw)} is not a boolean (true/false, 1/0, yes/no, on/off)`);
    return options.default ?? false;
  }

  oneOf<const T extends string>(name: string, values: readonly T[], options: Common<T> = {}): T {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, values[0] as T);
    if ((values as readonly string[]).includes(raw)) return raw as T;
    this.#problems.push(`${name}=${quote(raw)} must be one of ${values.join(", ")}`);
    return options.default ?? (values[0] as T);
  }

  /** A duration: "250ms", "5s", "2m", "1h", or a plain number of milliseconds. Returns milliseconds. */
  durationMs(name: string, options: Common<number> & { min?: number; max?: number } = {}): number {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, 0);
    const value = parseDurationMs(raw);
    if (value === undefined) {
      this.#problems.push(`${name}=${quote(raw)} is not a duration (e.g. 250ms, 5s, 2m, 1h)`);
      return options.default ?? 0;
    }
    this.#range(name, value, options.min, options.max, "ms");
    return value;
  }

  /** A URL whose scheme is one of `protocols` (e.g. ["nats:", "tls:"]). */
  url(name: string, options: Common<string> & { protocols?: readonly string[] } = {}): string {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, "");
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      this.#problems.push(`${name}=${quote(raw)} is not a URL`);
      return raw;
    }
    if (options.protocols !== undefined && !options.protocols.includes(parsed.protocol)) {
      this.#problems.push(`${name}=${quote(raw)} must use ${options.protocols.join(" or ")}`);
    }
    return raw;
  }

  /** A comma-separated list; blanks around items are dropped. */
  list(name: string, options: Common<readonly string[]> = {}): readonly string[] {
    const raw = this.#raw(name);
    if (raw === undefined) return this.#missing(name, options.default, []);
    return raw
      .split(",")
      .map((item) => item.trim())
      .filter((item) => item.length > 0);
  }

  /** "host:port" to listen on; port 0 picks a free port. */
  listenAddress(name: string, options: Common<string> = {}): { host: string; port: number } {
    const raw = this.string(name, options.default === undefined ? {} : { default: options.default });
    const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(raw);
    const port = Number(match?.[3]);
    if (match === null || port > 65535) {
      if (raw !== "") this.#problems.push(`${name}=${quote(raw)} is not host:port (e.g. 0.0.0.0:50051)`);
      return { host: "0.0.0.0", port: 0 };
    }
    return { host: match[1] ?? match[2] ?? "0.0.0.0", port };
  }

  /** Throws an INVALID_ARGUMENT AppError listing every problem, if there are any. */
  done(subject = "configuration"): void {
    if (this.#problems.length > 0) throw AppError.invalid(subject, this.#problems);
  }

  #raw(name: string): string | undefined {
    this.#names.add(name);
    const value = this.#env[name]?.trim();
    return value === undefined || value === "" ? undefined : value;
  }

  #missing<T>(name: string, fallback: T | undefined, placeholder: T): T {
    if (fallback !== undefined) return fallback;
    this.#problems.push(`${name} is required`);
    return placeholder;
  }

  #range(name: string, value: number, min?: number, max?: number, unit = ""): void {
    if (min !== undefined && value < min) this.#problems.push(`${name}=${value}${unit} is below the minimum ${min}${unit}`);
    if (max !== undefined && value > max) this.#problems.push(`${name}=${value}${unit} is above the maximum ${max}${unit}`);
  }
}

/**
 * Every POSELOOP_* variable a PoseLoop process reads: the trainer, the inferencer, the CLI and its SDK, the demo
 * (`npm start`) and the benchmarks. Users run them all from one shell, so a process treats as known not only its
 * own variables but everyone's, and warns only about names no process reads (a typo). Each service's config
 * test checks that its loader reads nothing outside this list, and the core test checks the CLI's and the
 * benchmarks' sources, so the list cannot go stale.
 */
export const POSELOOP_ENV_VARIABLES: readonly string[] = Object.freeze([
  // Both services
  "POSELOOP_NATS_URL",
  "POSELOOP_BUS_DIR",
  "POSELOOP_NATS_CREDS",
  "POSELOOP_NATS_NKEY_SEED_FILE",
  "POSELOOP_NATS_USER",
  "POSELOOP_NATS_PASSWORD_FILE",
  "POSELOOP_NATS_TOKEN_FILE",
  "POSELOOP_NATS_TLS_CA",
  "POSELOOP_NATS_TLS_CERT",
  "POSELOOP_NATS_TLS_KEY",
  "POSELOOP_LOG_LEVEL",
  "POSELOOP_GRPC_MAX_MESSAGE_BYTES",
  "POSELOOP_DRAIN_TIMEOUT",
  "POSELOOP_GRPC_KEEPALIVE",
  "POSELOOP_GRPC_MAX_CONNECTION_AGE",
  "POSELOOP_GRPC_MAX_CONNECTION_IDLE",
  "POSELOOP_TLS_CERT",
  "POSELOOP_TLS_KEY",
  "POSELOOP_TLS_CLIENT_CA",
  "POSELOOP_INSECURE",
  "POSELOOP_METRICS_PORT",
  // Trainer
  "POSELOOP_TRAINER_LISTEN",
  "POSELOOP_WORKER_ID",
  "POSELOOP_DATA_ROOT",
  "POSELOOP_WORK_DIR",
  "POSELOOP_CHECKPOINT_DIR",
  "POSELOOP_MAX_CONCURRENT_JOBS",
  "POSELOOP_JOB_ACK_WAIT",
  "POSELOOP_TRAINER_TOKEN",
  "POSELOOP_TRAINER_TOKENS",
  "POSELOOP_TRAINER_TOKENS_FILE",
  "POSELOOP_PYTHON",
  "POSELOOP_ENGINE_TIMEOUT",
  "POSELOOP_RDZV_HOST",
  // For fault-injection tests only: where a trainer kills itself (see the trainer's README).
  "POSELOOP_CRASH_AT",
  // Inferencer
  "POSELOOP_INFERENCER_LISTEN",
  "POSELOOP_INFERENCER_TOKENS",
  "POSELOOP_INFERENCER_TOKENS_FILE",
  "POSELOOP_MODEL",
  "POSELOOP_DETECTOR_MODEL",
  "POSELOOP_INSTANCE_ID",
  "POSELOOP_INFERENCE_WORKERS",
  "POSELOOP_INTRA_OP_THREADS",
  "POSELOOP_MAX_BATCH",
  "POSELOOP_BATCH_WAIT",
  "POSELOOP_FRAME_TRACE_RATIO",
  "POSELOOP_STREAM_MAX_IN_FLIGHT",
  "POSELOOP_STREAM_FIRST_MESSAGE_TIMEOUT",
  "POSELOOP_STREAM_IDLE_TIMEOUT",
  "POSELOOP_MAX_FRAME_BYTES",
  "POSELOOP_MAX_FRAME_PIXELS",
  "POSELOOP_MAX_STREAMS",
  "POSELOOP_MAX_STREAMS_PER_PEER",
  "POSELOOP_MAX_MODEL_BYTES",
  // CLI and SDK
  "POSELOOP_TRAINER_ADDR",
  "POSELOOP_INFERENCER_ADDR",
  "POSELOOP_TOKEN",
  "POSELOOP_TOKEN_FILE",
  "POSELOOP_TLS_CA",
  "POSELOOP_TLS_CLIENT_CERT",
  "POSELOOP_TLS_CLIENT_KEY",
  "POSELOOP_FFMPEG",
  "POSELOOP_CLI_FROM_SOURCE",
  // Demo and benchmarks
  "POSELOOP_DEMO_EPOCHS",
  "POSELOOP_BENCH_EXPERIMENT",
  "POSELOOP_BENCH_QUICK",
  "POSELOOP_BENCH_CASES",
  "POSELOOP_BENCH_EMA_ARMS",
  "POSELOOP_BENCH_EMA_DECAY",
  "POSELOOP_BENCH_EMA_WARMUP",
  "POSELOOP_BENCH_DETECTOR",
  "POSELOOP_BENCH_DETECTOR_EXPERIMENT",
  "POSELOOP_SOAK_MINUTES",
]);

/** A variable with a PoseLoop prefix that no PoseLoop process reads, and the known name it is closest to. */
export interface UnknownVariable {
  readonly name: string;
  /** The closest known name, when one is a few keystrokes away (see didYouMean). */
  readonly suggestion: string | undefined;
}

/**
 * The variables of `env` that start with `prefix` but are not `known`, sorted by name, each with the closest
 * known name: the typos a loader would otherwise silently ignore (it reads only the names it knows).
 *
 * Only names are looked at, never values: reading a value is how a recording env (see the deploy checks)
 * tells which variables a loader uses.
 */
export function unknownVariables(env: Env, prefix: string, known: Iterable<string>): UnknownVariable[] {
  const knownNames = new Set(known);
  return Object.keys(env)
    .filter((name) => name.startsWith(prefix) && !knownNames.has(name))
    .sort()
    .map((name) => ({ name, suggestion: didYouMean(name, knownNames) }));
}

const durationUnits: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "250ms", "1.5s", "2m", "1h" or a plain number of milliseconds. */
export function parseDurationMs(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim());
  if (match === null) return undefined;
  const value = Number(match[1]) * (durationUnits[match[2] ?? "ms"] ?? 1);
  return Number.isFinite(value) ? Math.round(value) : undefined;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
}
