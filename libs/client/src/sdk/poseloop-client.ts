import type { Env } from "@poseloop/core";
import { connectionsFromEnv, type ConnectionOptions } from "./client-options.js";
import { InferenceClient } from "./inference-client.js";
import { TrainerClient } from "./trainer-client.js";

export interface PoseloopClientOptions {
  trainer?: ConnectionOptions;
  inferencer?: ConnectionOptions;
  /** Applies to both services unless one sets its own. */
  token?: string;
  defaultTimeoutMs?: number;
}

/**
 * Both services behind one object. Channels connect lazily, on the first call, so a program that only
 * streams video never dials the trainer.
 *
 * ```ts
 * const poseloop = PoseloopClient.fromEnv(process.env);
 * const { job } = await poseloop.trainer.startTraining({ experimentYaml, overrides: { "TRAIN.LR": 5e-4 } });
 * for await (const event of poseloop.trainer.watchJob(job!.jobId)) console.log(event.event.case);
 * poseloop.close();
 * ```
 */
export class PoseloopClient {
  readonly trainer: TrainerClient;
  readonly inference: InferenceClient;

  constructor(options: PoseloopClientOptions = {}) {
    const shared: ConnectionOptions = {
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.defaultTimeoutMs === undefined ? {} : { defaultTimeoutMs: options.defaultTimeoutMs }),
    };
    this.trainer = new TrainerClient({ ...shared, ...options.trainer });
    this.inference = new InferenceClient({ ...shared, ...options.inferencer });
  }

  /**
   * Addresses and token from POSELOOP_TRAINER_ADDR, POSELOOP_INFERENCER_ADDR and POSELOOP_TOKEN, under
   * anything set in `options`.
   */
  static fromEnv(env: Env, options: PoseloopClientOptions = {}): PoseloopClient {
    const fromEnv = connectionsFromEnv(env);
    const token = options.token === undefined ? {} : { token: options.token };
    return new PoseloopClient({
      ...options,
      trainer: { ...fromEnv.trainer, ...token, ...options.trainer },
      inferencer: { ...fromEnv.inferencer, ...token, ...options.inferencer },
    });
  }

  /** Closes both channels; open calls are cancelled. */
  close(): void {
    this.trainer.close();
    this.inference.close();
  }
}
