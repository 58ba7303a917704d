import { mkdir } from "node:fs/promises";
import { ModelRegistry, openBus, type Bus } from "@poseloop/bus";
import { sleep, type Logger } from "@poseloop/core";
import { startGrpcServer, type ListenAddress } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { TrainerConfig } from "./config.js";
import { CheckpointList } from "./jobs/checkpoint-list.js";
import { BlobCheckpointStore, DirectoryCheckpointStore, type CheckpointStore } from "./jobs/checkpoint-store.js";
import { JobExecutor } from "./jobs/job-executor.js";
import { JobStore, TRAINING_QUEUE } from "./jobs/job-store.js";
import { trainerService } from "./trainer-service.js";

/** How long a training run's job writes retry while the bus is unavailable. */
const RUN_OUTAGE_TOLERANCE_MS = 120_000;

/** A running trainer: its gRPC address and how to stop it. */
export interface TrainerProcess {
  readonly address: ListenAddress;
  readonly bus: Bus;
  /** Hands running jobs back to the queue (after a checkpoint), drains open calls and closes the bus. */
  stop(): Promise<void>;
}

/**
 * Starts the trainer: the bus, the registry, the job store and the training queue; TrainerService over gRPC;
 * and `maxConcurrentJobs` consumers that take jobs from the queue and run them. Any number of trainers can
 * share a bus: each job runs on exactly one, and a job whose trainer dies is resumed by another.
 */
export async function startTrainer(config: TrainerConfig, logger: Logger): Promise<TrainerProcess> {
  const bus = await openBus({ ...config.bus, logger });
  const controller = new AbortController();
  const consumers: Promise<void>[] = [];
  try {
    await mkdir(config.workDir, { recursive: true });
    const registry = await ModelRegistry.open(bus, logger);
    const store = await JobStore.open(bus);
    // The runs' writes wait out a bus outage (a NATS restart) instead of throwing away an epoch; one longer
    // than the lease hands the job to another trainer, and fencing stops this one's run.
    const runStore = await JobStore.open(bus, { outlastOutagesMs: RUN_OUTAGE_TOLERANCE_MS, logger });
    const checkpointList = await CheckpointList.open(bus);
    const checkpoints: CheckpointStore = config.checkpointDir === "" ? await BlobCheckpointStore.open(bus) : new DirectoryCheckpointStore(config.checkpointDir);
    // The queue's default delivery limit bounds a job that fails the same way every time; its last failure is final.
    const queue = await bus.jobQueue(TRAINING_QUEUE, { ackWaitMs: config.jobAckWaitMs });
    const executor = new JobExecutor({
      store: runStore,
      checkpoints,
      checkpointList,
      registry,
      roots: { dataRoot: config.dataRoot, workDir: config.workDir },
      workerId: config.workerId,
      logger,
      ackWaitMs: config.jobAckWaitMs,
      maxDeliveries: queue.maxDeliveries,
      queue,
    });
    const grpc = await startGrpcServer(config.grpc, {
      logger,
      service: "trainer",
      fields: { bus: bus.kind, bus_location: bus.location, max_concurrent_jobs: config.maxConcurrentJobs, data_root: config.dataRoot },
      register: (server) => {
        server.register(
          TrainerService,
          trainerService({ store, queue, checkpointList, registry, dataRoot: config.dataRoot, authToken: config.authToken, logger, publishCheckpoint: (job, id, options) => executor.publishCheckpoint(job, id, options) }),
        );
      },
    });
    for (let i = 0; i < config.maxConcurrentJobs; i++) {
      consumers.push(
        (async () => {
          while (!controller.signal.aborted) {
            try {
              const delivery = await queue.next({ waitMs: 1000, signal: controller.signal });
              if (delivery !== undefined) await executor.run(delivery, controller.signal);
            } catch (error) {
              if (controller.signal.aborted) return;
              logger.warn("taking a job from the queue failed; retrying", { err: error });
              await sleep(1000, controller.signal).catch(() => undefined);
            }
          }
        })(),
      );
    }
    return {
      address: grpc.address,
      bus,
      stop: async () => {
        controller.abort();
        await Promise.allSettled(consumers);
        await grpc.stop();
        await bus.close();
      },
    };
  } catch (error) {
    controller.abort();
    await Promise.allSettled(consumers);
    await bus.close();
    throw error;
  }
}
