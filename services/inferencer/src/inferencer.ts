import { ModelRegistry, openBus, redactNatsUrl, type Bus } from "@poseloop/bus";
import type { Logger } from "@poseloop/core";
import { startGrpcServer, type GrpcServer, type ListenAddress } from "@poseloop/grpc";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { BatchScheduler } from "./batch-scheduler.js";
import type { InferencerConfig } from "./config.js";
import { FrameProcessor } from "./frame-processor.js";
import { inferenceService } from "./inference-service.js";
import { ModelManager } from "./model-manager.js";
import type { VersionSource } from "./serving-handle.js";
import { TrialController } from "./trial/trial-controller.js";
import { InferenceWorkerPool } from "./worker-pool.js";

/** A running inferencer: its gRPC address and how to stop it. */
export interface InferencerProcess {
  readonly address: ListenAddress;
  readonly server: GrpcServer;
  readonly bus: Bus;
  readonly models: ModelManager;
  /** Canary and shadow trials of the served model's candidates. */
  readonly trials: TrialController;
  stop(): Promise<void>;
}

/**
 * Starts the inferencer: the bus and the registry, the inference workers, the model manager following the
 * serving version of the configured model, and InferenceService over gRPC. Health stays NOT_SERVING until a
 * model version is loaded, so that load balancers and readiness probes send no frames it cannot answer.
 */
export async function startInferencer(config: InferencerConfig, logger: Logger): Promise<InferencerProcess> {
  const bus = await openBus({ ...config.bus, logger });
  const pool = InferenceWorkerPool.create(config.workers, { intraOpThreads: config.intraOpThreads, maxPixels: config.limits.maxFramePixels });
  try {
    const registry = await ModelRegistry.open(bus, logger);
    const grpc = await startGrpcServer(config.grpc, {
      logger,
      service: "inferencer",
      initialHealth: "NOT_SERVING",
      fields: { bus: bus.kind, bus_location: bus.location.split(",").map(redactNatsUrl).join(","), model: config.defaultModel, workers: config.workers },
      register: (server) => {
        const models = new ModelManager({ registry, pool, modelName: config.defaultModel, logger, health: server.health, healthServices: [InferenceService.typeName], maxModelBytes: config.limits.maxModelBytes });
        // One lane per model version source: the serving version, and a trial's candidate beside it. Both share
        // the workers; each batches its own frames, since a batch runs on one version.
        const lane = (versions: VersionSource, role: "serving" | "candidate" = "candidate") => {
          const scheduler = new BatchScheduler(pool, versions, { maxBatch: config.maxBatch, maxWaitMs: config.batchWaitMs, lane: role });
          return { scheduler, processor: new FrameProcessor(scheduler, { limits: config.limits, frameTraceRatio: config.frameTraceRatio, modelName: config.defaultModel }) };
        };
        const serving = lane(models, "serving");
        const trials = new TrialController({ registry, models, modelName: config.defaultModel, logger, decidedBy: config.instanceId, limits: config.limits, serving, candidateLane: lane, maxCopiesInFlight: config.workers });
        server.register(InferenceService, inferenceService({ processor: trials, models, limits: config.limits, defaultModel: config.defaultModel, logger }));
        return { models, scheduler: serving.scheduler, trials };
      },
    });
    const { models: manager, scheduler, trials } = grpc.registered;
    manager.start();
    trials.start();
    return {
      address: grpc.address,
      server: grpc.server,
      bus,
      models: manager,
      trials,
      stop: async () => {
        await grpc.stop();
        await trials.stop();
        scheduler.close();
        await manager.stop();
        await pool.close();
        await bus.close();
      },
    };
  } catch (error) {
    await pool.close();
    await bus.close();
    throw error;
  }
}
