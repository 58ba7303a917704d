import { mkdir } from "node:fs/promises";
import { ModelRegistry, openBus, type Bus, type JobQueue } from "@poseloop/bus";
import { sleep, type Env, type Logger } from "@poseloop/core";
import { startGrpcServer, type ListenAddress } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { TrainerInfo } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { TrainerConfig } from "./config.js";
import {
  ADVERTISE_EVERY_MS,
  describeCapabilities,
  onnxruntimeCapability,
  placementsOf,
  probeCapabilities,
  queueNameOf,
  toTrainerInfo,
  TrainerDirectory,
  type Placement,
  type TrainerCapabilities,
} from "./engines/capabilities.js";
import { EvaluationRunner } from "./evaluation/evaluation-runner.js";
import { IMPORTS_BUCKET } from "./imports/import-claim.js";
import { ModelImporter } from "./imports/model-import.js";
import { CheckpointList } from "./jobs/checkpoint-list.js";
import { BlobCheckpointStore, DirectoryCheckpointStore, type CheckpointStore } from "./jobs/checkpoint-store.js";
import { JobExecutor } from "./jobs/job-executor.js";
import { REFERENCE_AP_BUCKET } from "./publication/promotion.js";
import { JobStore, TRAINING_QUEUE } from "./jobs/job-store.js";
import { nodeQueueName, runNodeTask } from "./jobs/node-runner.js";
import { SweepDriver } from "./sweeps/sweep-driver.js";
import { SweepStore } from "./sweeps/sweep-store.js";
import { observeJobCounts } from "./trainer-metrics.js";
import { trainerService } from "./trainer-service.js";

/** How long the PyTorch probe may take per interpreter: importing torch takes seconds, CUDA's init more. */
const TORCH_PROBE_TIMEOUT_MS = 20_000;
/** How long a consumer waits on each of its placement queues before looking at the next. */
const QUEUE_POLL_MS = 250;

/** How long a training run's job writes retry while the bus is unavailable. */
const RUN_OUTAGE_TOLERANCE_MS = 120_000;

/** A running trainer: its gRPC address and how to stop it. */
export interface TrainerProcess {
  readonly address: ListenAddress;
  readonly bus: Bus;
  /**
   * What this trainer can run so far: onnxruntime from the start, the PyTorch engine once `probed` settles
   * (its probe runs in the background from the start). Training runs check their job against it (canRun).
   */
  readonly capabilities: TrainerCapabilities;
  readonly probed: Promise<TrainerCapabilities>;
  /** Hands running jobs back to the queue (after a checkpoint), drains open calls and closes the bus. */
  stop(): Promise<void>;
}

/**
 * Starts the trainer: the bus, the registry, the job store and the training queue; TrainerService over gRPC;
 * and `maxConcurrentJobs` consumers that take jobs from the queue and run them. Any number of trainers can
 * share a bus: each job runs on exactly one, and a job whose trainer dies is resumed by another.
 */
export async function startTrainer(config: TrainerConfig, logger: Logger, options: { env?: Env } = {}): Promise<TrainerProcess> {
  // The probe runs while the bus opens; it never throws (an engine that cannot run is a capability too).
  const probing = probeCapabilities(config.workerId, options.env ?? process.env, { python: config.python, timeoutMs: TORCH_PROBE_TIMEOUT_MS });
  const bus = await openBus({ ...config.bus, logger });
  const controller = new AbortController();
  const consumers: Promise<void>[] = [];
  let advertising: ReturnType<typeof setInterval> | undefined;
  let jobCounts: ReturnType<typeof observeJobCounts> | undefined;
  try {
    await mkdir(config.workDir, { recursive: true });
    const registry = await ModelRegistry.open(bus, logger);
    const store = await JobStore.open(bus);
    jobCounts = observeJobCounts(() => store.list(), logger);
    // The runs' writes wait out a bus outage (a NATS restart) instead of throwing away an epoch; one longer
    // than the lease hands the job to another trainer, and fencing stops this one's run.
    const runStore = await JobStore.open(bus, { outlastOutagesMs: RUN_OUTAGE_TOLERANCE_MS, logger });
    const checkpointList = await CheckpointList.open(bus);
    // Every trainer, an API-only one included, drives sweeps: one at a time per sweep, by a lease in its record.
    const sweepStore = await SweepStore.open(bus);
    const sweepDriver = new SweepDriver({ store: sweepStore, workerId: config.workerId, logger });
    const checkpoints: CheckpointStore = config.checkpointDir === "" ? await BlobCheckpointStore.open(bus) : new DirectoryCheckpointStore(config.checkpointDir);
    // A version's AP on a reference set, kept for every trainer of the bus (an if-better policy compares on it).
    const referenceAps = await bus.keyValueStore(REFERENCE_AP_BUCKET, { history: 1 });
    // An import is claimed here while a trainer checks and publishes it, so that no other trainer publishes it again.
    const importClaims = await bus.keyValueStore(IMPORTS_BUCKET, { history: 1 });
    // The queue's default delivery limit bounds a job that fails the same way every time; its last failure is final.
    const queue = await bus.jobQueue(TRAINING_QUEUE, { ackWaitMs: config.jobAckWaitMs });
    // Each placement class (engine and device kind) has its queue, onnxruntime-cpu's the one above, and so has
    // each device kind's nodes of multi-node jobs; each is opened once, when first needed.
    const queues = new Map<string, Promise<JobQueue>>([[TRAINING_QUEUE, Promise.resolve(queue)]]);
    const openQueue = (name: string): Promise<JobQueue> => {
      let opened = queues.get(name);
      if (opened === undefined) {
        opened = bus.jobQueue(name, { ackWaitMs: config.jobAckWaitMs });
        // A failed open is tried again by the next caller, not remembered.
        opened.catch(() => queues.delete(name));
        queues.set(name, opened);
      }
      return opened;
    };
    const queueFor = (placement: Placement): Promise<JobQueue> => openQueue(queueNameOf(TRAINING_QUEUE, placement));
    const nodeQueue = (kind: "cpu" | "cuda"): Promise<JobQueue> => openQueue(nodeQueueName(TRAINING_QUEUE, kind));
    // Until the probe answers, the trainer serves and trains onnxruntime jobs; the PyTorch engine's queues are
    // consumed once it is known to work (importing torch takes seconds, a trainer start should not).
    let capabilities: TrainerCapabilities = { workerId: config.workerId, engines: [onnxruntimeCapability()] };
    const directory = await TrainerDirectory.open(bus);
    let info: TrainerInfo = toTrainerInfo(capabilities, config.maxConcurrentJobs);
    // Advertised before the service answers, so that its own StartTraining already counts this trainer; a
    // failure (JetStream briefly unavailable) is no reason not to start: the refresh below writes it again.
    await directory.advertise(info).catch((error: unknown) => logger.warn("advertising this trainer failed; the next refresh tries again", { err: error }));
    advertising = setInterval(() => {
      info = toTrainerInfo(capabilities, config.maxConcurrentJobs);
      directory.advertise(info).catch((error: unknown) => logger.warn("refreshing this trainer's advertisement failed", { err: error }));
    }, ADVERTISE_EVERY_MS);
    /** The queues this trainer's consumers take jobs from, in turn; the probe adds the PyTorch engine's. */
    const consumed: { name: string; queue: JobQueue; nodes: boolean }[] = [];
    const consume = async (placements: readonly Placement[]): Promise<void> => {
      if (config.maxConcurrentJobs === 0) return;
      for (const placement of placements) {
        if (consumed.some((c) => c.name === placement)) continue;
        consumed.push({ name: placement, queue: await queueFor(placement), nodes: false });
        // A trainer that runs the PyTorch engine on a device kind also runs the other nodes of its multi-node jobs.
        const kind = placement === "pytorch-cpu" ? "cpu" : placement === "pytorch-cuda" ? "cuda" : undefined;
        if (kind !== undefined) consumed.push({ name: `nodes-${kind}`, queue: await nodeQueue(kind), nodes: true });
      }
    };
    await consume(placementsOf(capabilities));
    const probed = probing.then(async (found) => {
      capabilities = found;
      logger.info(`trainer capabilities: ${describeCapabilities(found)}`, { capabilities: found.engines.map((e) => ({ ...e })) });
      info = toTrainerInfo(found, config.maxConcurrentJobs);
      await directory.advertise(info).catch((error: unknown) => logger.warn("advertising this trainer's engines failed", { err: error }));
      await consume(placementsOf(found));
      return found;
    });
    // A failure above (a queue that would not open) is retried by nothing: log it, keep onnxruntime running.
    probed.catch((error: unknown) => logger.error("setting up the PyTorch engine's queues failed", { err: error }));
    const evaluations = new EvaluationRunner({ store, checkpointList, checkpoints, registry, roots: { dataRoot: config.dataRoot, workDir: config.workDir }, logger });
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
      capabilities: { now: () => capabilities, probed },
      env: options.env ?? process.env,
      engineTimeoutMs: config.engineTimeoutMs,
      ...(config.crashAt === undefined ? {} : { crashAt: config.crashAt }),
      nodeQueue,
      rdzvHost: config.rdzvHost,
      // An if-better publication measures the serving version the way Evaluate does, in turn with its calls.
      evaluate: (request, signal) => evaluations.evaluate(request, signal),
      referenceAps,
    });
    const nodeRunner = {
      store: runStore,
      logger,
      // The roots as this trainer resolved them: the node's engine finds the job's images under them.
      env: { ...(options.env ?? process.env), POSELOOP_DATA_ROOT: config.dataRoot, POSELOOP_WORK_DIR: config.workDir },
      python: async () => (await probed).engines.find((engine) => engine.name === "pytorch" && engine.available)?.python,
    };
    const grpc = await startGrpcServer(config.grpc, {
      logger,
      service: "trainer",
      fields: { bus: bus.kind, bus_location: bus.location, max_concurrent_jobs: config.maxConcurrentJobs, data_root: config.dataRoot },
      register: (server) => {
        server.register(
          TrainerService,
          trainerService({
            store,
            queue,
            queueFor,
            trainers: { self: () => info, live: () => directory.live(), probed: () => probed.then(() => undefined) },
            checkpointList,
            checkpoints,
            registry,
            dataRoot: config.dataRoot,
            authToken: config.authToken,
            logger,
            publishCheckpoint: (job, id, options) => executor.publishCheckpoint(job, id, options),
            evaluate: (request, signal) => evaluations.evaluate(request, signal),
            sweeps: { store: sweepStore, driver: sweepDriver },
            imports: new ModelImporter({ registry, roots: { dataRoot: config.dataRoot, workDir: config.workDir }, logger, claims: { kv: importClaims, holder: config.workerId } }),
          }),
        );
      },
    });
    consumers.push(sweepDriver.run(controller.signal));
    for (let i = 0; i < config.maxConcurrentJobs; i++) {
      consumers.push(
        (async () => {
          // Round robin over the queues of the classes this trainer can run; a job of another class is never
          // taken here. Consumers start at different queues so that one busy class does not starve the others.
          let turn = i;
          while (!controller.signal.aborted) {
            try {
              const from = consumed[turn++ % consumed.length];
              if (from === undefined) return; // an API-only trainer (no consumers) never gets here
              const delivery = await from.queue.next({ waitMs: consumed.length === 1 ? 1000 : QUEUE_POLL_MS, signal: controller.signal });
              if (delivery === undefined) continue;
              if (from.nodes) await runNodeTask(delivery, nodeRunner, controller.signal);
              else await executor.run(delivery, controller.signal, from.queue);
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
      get capabilities() {
        return capabilities;
      },
      probed,
      stop: async () => {
        controller.abort();
        clearInterval(advertising);
        jobCounts?.close();
        await Promise.allSettled(consumers);
        // Gone at once for the other trainers' StartTraining, not three refreshes later.
        await directory.withdraw(info).catch((error: unknown) => logger.warn("withdrawing this trainer's advertisement failed", { err: error }));
        await grpc.stop();
        await jobCounts?.refreshed();
        await bus.close();
      },
    };
  } catch (error) {
    controller.abort();
    clearInterval(advertising);
    jobCounts?.close();
    await Promise.allSettled(consumers);
    await jobCounts?.refreshed();
    await bus.close();
    throw error;
  }
}
