import { didYouMean, type Env } from "@poseloop/core";

/** The POSELOOP_* variables the CLI itself reads (bin/poseloop.mjs reads POSELOOP_CLI_FROM_SOURCE). */
export const CLI_VARIABLES = Object.freeze([
  "POSELOOP_TRAINER_ADDR",
  "POSELOOP_INFERENCER_ADDR",
  "POSELOOP_TOKEN",
  "POSELOOP_FFMPEG",
  "POSELOOP_CLI_FROM_SOURCE",
]);

/**
 * POSELOOP_* variables of the services (their config.ts), the demo and the benchmarks. Whoever runs the
 * services next to the CLI has these set in the same shell; they are not typos and get no warning.
 */
export const NEIGHBOUR_VARIABLES = Object.freeze([
  // services/trainer and services/inferencer (with libs/bus and libs/grpc settings they read)
  "POSELOOP_TRAINER_LISTEN",
  "POSELOOP_TRAINER_TOKEN",
  "POSELOOP_INFERENCER_LISTEN",
  "POSELOOP_NATS_URL",
  "POSELOOP_BUS_DIR",
  "POSELOOP_LOG_LEVEL",
  "POSELOOP_WORKER_ID",
  "POSELOOP_DATA_ROOT",
  "POSELOOP_WORK_DIR",
  "POSELOOP_CHECKPOINT_DIR",
  "POSELOOP_MAX_CONCURRENT_JOBS",
  "POSELOOP_JOB_ACK_WAIT",
  "POSELOOP_GRPC_MAX_MESSAGE_BYTES",
  "POSELOOP_DRAIN_TIMEOUT",
  "POSELOOP_MODEL",
  "POSELOOP_INSTANCE_ID",
  "POSELOOP_INFERENCE_WORKERS",
  "POSELOOP_INTRA_OP_THREADS",
  "POSELOOP_MAX_BATCH",
  "POSELOOP_BATCH_WAIT",
  "POSELOOP_FRAME_TRACE_RATIO",
  "POSELOOP_STREAM_MAX_IN_FLIGHT",
  "POSELOOP_MAX_FRAME_BYTES",
  "POSELOOP_MAX_FRAME_PIXELS",
  "POSELOOP_MAX_STREAMS",
  "POSELOOP_MAX_MODEL_BYTES",
  // npm start (apps/poseloop/src/demo) and bench/
  "POSELOOP_DEMO_EPOCHS",
  "POSELOOP_BENCH_EXPERIMENT",
]);

const KNOWN_VARIABLES: ReadonlySet<string> = new Set([...CLI_VARIABLES, ...NEIGHBOUR_VARIABLES]);

/**
 * One warning line per POSELOOP_* variable in `env` that nothing of PoseLoop reads: a typo in the name
 * of the trainer's address otherwise leaves the CLI on the default address without a word.
 */
export function unknownVariableWarnings(env: Env): string[] {
  return Object.keys(env)
    .filter((name) => name.startsWith("POSELOOP_") && env[name] !== undefined && !KNOWN_VARIABLES.has(name))
    .sort()
    .map((name) => {
      const suggestion = didYouMean(name, KNOWN_VARIABLES);
      return `poseloop: warning: unknown environment variable ${name}${suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`}`;
    });
}

/** Whether any PoseLoop program reads the variable `name`. */
export function isKnownVariable(name: string): boolean {
  return KNOWN_VARIABLES.has(name);
}
