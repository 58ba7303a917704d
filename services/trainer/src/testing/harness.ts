import { ModelRegistry, NatsBus, type Bus } from "@poseloop/bus";
import { silentLogger, type Env } from "@poseloop/core";
import { createClient, type ClientControls, type ServiceClient } from "@poseloop/grpc";
import { TrainerService, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { loadConfig } from "../config.js";
import { startTrainer, type TrainerProcess } from "../trainer.js";

export type TrainerClient = ServiceClient<(typeof TrainerService)["method"]> & ClientControls;

export interface TrainerHarness {
  readonly trainer: TrainerProcess;
  readonly client: TrainerClient;
  readonly registry: ModelRegistry;
  readonly observerBus: Bus;
  close(): Promise<void>;
}

/** A trainer in this process on `natsUrl`, a client to it, and a registry to check what it published. */
export async function startTrainerHarness(natsUrl: string, dir: string, env: Env = {}): Promise<TrainerHarness> {
  const config = loadConfig({
    POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
    POSELOOP_NATS_URL: natsUrl,
    POSELOOP_DATA_ROOT: dir,
    POSELOOP_WORK_DIR: dir,
    POSELOOP_LOG_LEVEL: "error",
    POSELOOP_JOB_ACK_WAIT: "5s",
    ...env,
  });
  const trainer = await startTrainer(config, silentLogger);
  const observerBus = await NatsBus.connect({ servers: natsUrl, name: "observer", reconnectTimeWaitMs: 100 });
  const registry = await ModelRegistry.open(observerBus);
  const client: TrainerClient = createClient(TrainerService, `127.0.0.1:${trainer.address.port}`);
  return {
    trainer,
    client,
    registry,
    observerBus,
    close: async () => {
      client.$close();
      await trainer.stop();
      await observerBus.close();
    },
  };
}

/** Every event of a job until it ends. */
export async function jobEvents(client: TrainerClient, jobId: string, options: { skipProgress?: boolean; timeoutMs?: number } = {}): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  const signal = AbortSignal.timeout(options.timeoutMs ?? 120_000);
  for await (const response of client.watchJob({ jobId, skipProgress: options.skipProgress ?? false }, { signal })) {
    if (response.event !== undefined) events.push(response.event);
  }
  return events;
}
