import { fromBinary } from "@bufbuild/protobuf";
import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { EXPERIMENT_LIMITS, withDatasetProblems } from "./experiment.js";

const STARTUP_MS = 60_000;

export interface ExperimentCheckerOptions {
  /** How long one file may take to check before its worker is stopped. Default 10 s. */
  readonly deadlineMs?: number;
  /** Files checked at once; more are refused with RESOURCE_EXHAUSTED. Default 4. */
  readonly maxConcurrent?: number;
}

/**
 * Checks experiment files off the service's event loop: YAML's cost grows faster than the text, and a
 * file parsed on the main thread stops gRPC, job heartbeats and everything else meanwhile. Each file gets a
 * worker of its own, which ends with the check (a file that runs past the deadline takes its worker with
 * it, so nothing it did lingers); the dataset's files are then checked here, as they are I/O.
 */
export class ExperimentChecker {
  readonly #deadlineMs: number;
  readonly #maxConcurrent: number;
  #running = 0;

  constructor(options: ExperimentCheckerOptions = {}) {
    this.#deadlineMs = options.deadlineMs ?? 10_000;
    this.#maxConcurrent = options.maxConcurrent ?? 4;
  }

  /** What prepareExperiment returns, computed in a worker thread. */
  async prepare(yaml: string, options: { overrides?: Readonly<Record<string, string>>; dataRoot?: string } = {}): Promise<{ config: TrainConfig | undefined; problems: string[] }> {
    // Cheap refusals first: a file over the size limit never reaches a worker (nor a copy into one).
    if (Buffer.byteLength(yaml, "utf8") > EXPERIMENT_LIMITS.maxBytes) {
      return { config: undefined, problems: [`the experiment file is ${Buffer.byteLength(yaml, "utf8")} bytes; the limit is ${EXPERIMENT_LIMITS.maxBytes} bytes (256 KiB)`] };
    }
    if (this.#running >= this.#maxConcurrent) {
      throw new AppError(Code.RESOURCE_EXHAUSTED, `${this.#running} experiment files are being checked already; retry shortly`);
    }
    this.#running++;
    let checked: { config?: Uint8Array; problems: string[] };
    try {
      checked = await this.#check(yaml, { ...options.overrides });
    } finally {
      this.#running--;
    }
    const config = checked.config === undefined ? undefined : fromBinary(TrainConfigSchema, checked.config);
    return withDatasetProblems({ config, problems: checked.problems }, options.dataRoot);
  }

  async #check(yaml: string, overrides: Record<string, string>): Promise<{ config?: Uint8Array; problems: string[] }> {
    const client = new WorkerClient(startModuleWorker(import.meta.url, "./experiment-worker", { name: "poseloop-experiment" }));
    try {
      // The deadline is the file's: loading the worker's modules (slow from sources, on a busy machine) is not.
      const started = await within(client.call("ready"), STARTUP_MS);
      if (!started) throw new AppError(Code.UNAVAILABLE, "the experiment checker did not start");
      const checked = await within(client.call<{ config?: Uint8Array; problems: string[] }>("check", { yaml, overrides }), this.#deadlineMs);
      return checked === false ? { problems: [`the experiment file took longer than ${this.#deadlineMs / 1000} s to check (the limit on checking time)`] } : checked;
    } finally {
      // Also what stops a check that ran past its deadline.
      await client.terminate();
    }
  }
}

/** The promise's value, or false when `ms` passed first. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | false> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
