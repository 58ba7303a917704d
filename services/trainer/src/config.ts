import { busOptionsFromEnv, type BusSettings } from "@poseloop/bus";
import { EnvReader, LogLevel, POSELOOP_ENV_VARIABLES, unknownVariables, type Env, type UnknownVariable } from "@poseloop/core";
import { accessKey, grpcServerSettingsFromEnv, Role, type GrpcServerSettings, type MethodAccessMap } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { metricsEndpointFromEnv, telemetryConfigFromEnv, type MetricsEndpoint, type TelemetryConfig } from "@poseloop/telemetry";
import { hostname } from "node:os";
import { resolve } from "node:path";

export interface TrainerConfig {
  readonly grpc: GrpcServerSettings;
  /** The bus, with the NATS credentials and TLS files (POSELOOP_NATS_*) in `natsSecurity`. */
  readonly bus: BusSettings;
  readonly logLevel: LogLevel;
  readonly telemetry: TelemetryConfig;
  /** The Prometheus endpoint (POSELOOP_METRICS_PORT), on the gRPC listen host; undefined: none. */
  readonly metrics: MetricsEndpoint | undefined;
  /** Problems with OTEL_* variables that were ignored (telemetry never stops a service). */
  readonly telemetryWarnings: readonly string[];
  /** POSELOOP_* variables that no PoseLoop process reads (typos), to warn about at start. */
  readonly unknownVariables: readonly UnknownVariable[];
  /** This process's name in job records and logs. */
  readonly workerId: string;
  /** COCO datasets resolve under this folder; nothing outside it is read. */
  readonly dataRoot: string;
  /** Generated datasets and caches go under this folder. */
  readonly workDir: string;
  /** A folder every trainer mounts for checkpoints; empty: the bus's object store. */
  readonly checkpointDir: string;
  /** Jobs this process trains at once (0: API only, it trains nothing). */
  readonly maxConcurrentJobs: number;
  /** How long a job stays leased to a trainer that stopped heartbeating before another takes it over. */
  readonly jobAckWaitMs: number;
  /**
   * POSELOOP_TRAINER_TOKEN, kept for compatibility: it is one of `grpc.tokens` with the admin role, checked
   * by the server before any handler runs.
   */
  readonly authToken: string;
  /**
   * POSELOOP_PYTHON: the interpreter that runs the PyTorch engine; empty: the first of `python3` on PATH and
   * /usr/bin/python3 that can import torch (probed at start).
   */
  readonly python: string;
  /**
   * POSELOOP_ENGINE_TIMEOUT (default 10m): the PyTorch engine answering none of a run's requests (a step, a
   * state transfer) for this long is hung: it is killed and the job fails, keeping its last checkpoint.
   */
  readonly engineTimeoutMs: number;
  /**
   * POSELOOP_RDZV_HOST (default: this host's name): the address the other nodes of a multi-node job reach this
   * trainer at, when it runs node 0 and hosts the rendezvous (TRAIN.NODES > 1 without TRAIN.RDZV_ENDPOINT).
   */
  readonly rdzvHost: string;
  /**
   * POSELOOP_CRASH_AT, for fault-injection tests only: where this trainer kills itself with SIGKILL (a power
   * cut: no cleanup), on the Nth time it gets there; unset: never.
   */
  readonly crashAt?: CrashAt;
}

/** The points POSELOOP_CRASH_AT can name (see JobExecutor). */
export const CRASH_PHASES = ["checkpoint-write", "after-publish"] as const;
export type CrashPhase = (typeof CRASH_PHASES)[number];

export interface CrashAt {
  readonly phase: CrashPhase;
  /** 1: the first time the process reaches the point. */
  readonly occurrence: number;
}

/** POSELOOP_CRASH_AT's value, `phase` or `phase:N`; undefined when it names no known phase. */
export function parseCrashAt(text: string): CrashAt | undefined {
  const match = /^([a-z-]+)(?::([1-9]\d{0,5}))?$/.exec(text.trim());
  const phase = CRASH_PHASES.find((known) => known === match?.[1]);
  return phase === undefined ? undefined : { phase, occurrence: Number(match?.[2] ?? 1) };
}

/** TrainerService methods that change which model serves, or how it comes to. */
const ADMIN_METHODS: ReadonlySet<string> = new Set(["PublishCheckpoint", "SetPromotionPolicy", "ImportModel"]);

/**
 * The role each TrainerService method needs: following jobs (and reading promotion policies and decisions)
 * needs `train`; changing which model serves (publish, rollback, set a version, import a model) or the promotion
 * policy that decides it needs `admin`. Exporting a version reads what Evaluate reads: `train`. An `admin` token may call everything.
 */
export const TRAINER_METHOD_ACCESS: MethodAccessMap = Object.freeze(
  Object.fromEntries(TrainerService.methods.map((method) => [accessKey(method), ADMIN_METHODS.has(method.name) ? Role.ADMIN : Role.TRAIN])),
);

/**
 * The trainer's configuration from environment variables, every problem reported at once:
 * POSELOOP_TRAINER_LISTEN (default 127.0.0.1:50052; another address needs tokens or TLS), POSELOOP_NATS_URL, POSELOOP_BUS_DIR, POSELOOP_LOG_LEVEL,
 * POSELOOP_WORKER_ID, POSELOOP_DATA_ROOT (default ./data), POSELOOP_WORK_DIR (default ./.poseloop/work),
 * POSELOOP_CHECKPOINT_DIR, POSELOOP_MAX_CONCURRENT_JOBS (default 1), POSELOOP_JOB_ACK_WAIT (default 6s),
 * POSELOOP_TRAINER_TOKENS ("role:token,..."; roles stream, train, admin), POSELOOP_TRAINER_TOKENS_FILE,
 * POSELOOP_TRAINER_TOKEN (an admin token), POSELOOP_TLS_CERT, POSELOOP_TLS_KEY, POSELOOP_TLS_CLIENT_CA,
 * POSELOOP_PYTHON, POSELOOP_ENGINE_TIMEOUT (default 10m), POSELOOP_RDZV_HOST, POSELOOP_CRASH_AT (fault-injection tests), POSELOOP_INSECURE, POSELOOP_GRPC_MAX_MESSAGE_BYTES, POSELOOP_DRAIN_TIMEOUT and the standard OTEL_* ones.
 * Without tokens or TLS it listens on 127.0.0.1 only (see grpcServerSettingsFromEnv).
 * Other POSELOOP_* names that no PoseLoop process reads come back in `unknownVariables`.
 */
export function loadConfig(env: Env): TrainerConfig {
  const reader = new EnvReader(env);
  const authToken = reader.string("POSELOOP_TRAINER_TOKEN", { default: "" });
  const grpc = grpcServerSettingsFromEnv(reader, "POSELOOP_TRAINER", 50052, {
    methods: TRAINER_METHOD_ACCESS,
    extraTokens: authToken === "" ? [] : [{ role: Role.ADMIN, token: authToken }],
  });
  const workerId = reader.string("POSELOOP_WORKER_ID", {
    default: `trainer-${hostname()}-${process.pid}`,
    pattern: /^[A-Za-z0-9._-]{1,64}$/,
    hint: "must be 1-64 letters, digits, '.', '_' or '-'",
  });
  const bus = busOptionsFromEnv(reader, workerId);
  const logLevel = reader.oneOf("POSELOOP_LOG_LEVEL", Object.keys(LogLevel) as LogLevel[], { default: "info" });
  const dataRoot = resolve(reader.string("POSELOOP_DATA_ROOT", { default: "data" }));
  const workDir = resolve(reader.string("POSELOOP_WORK_DIR", { default: ".poseloop/work" }));
  const checkpointDirRaw = reader.string("POSELOOP_CHECKPOINT_DIR", { default: "" });
  const maxConcurrentJobs = reader.int("POSELOOP_MAX_CONCURRENT_JOBS", { default: 1, min: 0, max: 64 });
  // 6 s: a dead trainer's job is redelivered 5-6 s after its last heartbeat (every second), so another trainer
  // takes over within 10 s (bench/takeover.ts). A live trainer loses its job only if its main thread stalls
  // for over 5 s (training, data and export run in worker threads) or NATS is away that long; fencing then stops
  // it and the job resumes from its last checkpoint, so a spurious takeover costs work, never a second result.
  const jobAckWaitMs = reader.durationMs("POSELOOP_JOB_ACK_WAIT", { default: 6_000, min: 1000, max: 3_600_000 });
  const python = reader.string("POSELOOP_PYTHON", { default: "" });
  const engineTimeoutMs = reader.durationMs("POSELOOP_ENGINE_TIMEOUT", { default: 600_000, min: 1000, max: 86_400_000 });
  const rdzvHost = reader.string("POSELOOP_RDZV_HOST", { default: hostname(), pattern: /^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:]+\])$/, hint: "must be a host name, an IPv4 address or a [bracketed] IPv6 address" });
  const crashAtRaw = reader.string("POSELOOP_CRASH_AT", { default: "" });
  const crashAt = crashAtRaw === "" ? undefined : parseCrashAt(crashAtRaw);
  if (crashAtRaw !== "" && crashAt === undefined) reader.problem(`POSELOOP_CRASH_AT=${JSON.stringify(crashAtRaw)} must be one of ${CRASH_PHASES.join(", ")}, optionally with :N (the Nth time)`);
  const metrics = metricsEndpointFromEnv(reader, grpc.host);
  reader.done("trainer configuration");
  // The other service's and the CLI's variables are known too: users run them all from one shell.
  const unknown = unknownVariables(env, "POSELOOP_", [...POSELOOP_ENV_VARIABLES, ...reader.names]);
  const { config: telemetry, warnings } = telemetryConfigFromEnv(env, { serviceName: "poseloop-trainer", serviceVersion: "0.1.0" });
  return Object.freeze({
    grpc,
    bus,
    logLevel,
    telemetry,
    metrics,
    telemetryWarnings: warnings,
    unknownVariables: unknown,
    workerId,
    dataRoot,
    workDir,
    checkpointDir: checkpointDirRaw === "" ? "" : resolve(checkpointDirRaw),
    maxConcurrentJobs,
    jobAckWaitMs,
    authToken,
    python,
    engineTimeoutMs,
    rdzvHost,
    ...(crashAt === undefined ? {} : { crashAt }),
  });
}
