import { ModelRegistry, openBus, redactNatsUrl, type Bus } from "@poseloop/bus";
import type { Logger } from "@poseloop/core";
import type { ServingSpec } from "@poseloop/estimator";
import { startGrpcServer, type GrpcServer, type ListenAddress } from "@poseloop/grpc";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { BatchScheduler } from "./batch-scheduler.js";
import type { InferencerConfig } from "./config.js";
import { detectorSpecOf, type DetectorServingSpec } from "./detector-spec.js";
import { FrameProcessor, type DetectorStage } from "./frame-processor.js";
import { inferenceService } from "./inference-service.js";
import { ModelManager } from "./model-manager.js";
import type { DetectionJob, DetectionOutcome } from "./person-detector.js";
import type { VersionSource } from "./serving-handle.js";
import { TrialController } from "./trial/trial-controller.js";
import { InferenceWorkerPool } from "./worker-pool.js";

/** A running inferencer: its gRPC address and how to stop it. */
export interface InferencerProcess {
  readonly address: ListenAddress;
  readonly server: GrpcServer;
  readonly bus: Bus;
  readonly models: ModelManager;
  /** The person detector's versions (POSELOOP_DETECTOR_MODEL), when it runs one. */
  readonly detectors: ModelManager<DetectorServingSpec> | undefined;
  /** Canary and shadow trials of the served model's candidates. */
  readonly trials: TrialController;
  stop(): Promise<void>;
}

/**
 * Starts the inferencer: the bus and the registry, the inference workers, the model manager following the
 * serving version of the configured model, and InferenceService over gRPC. Health stays NOT_SERVING until a
 * model version is loaded, so that load balancers and readiness probes send no frames it cannot answer.
 *
 * With POSELOOP_DETECTOR_MODEL a second manager follows the person detector's serving version the same way
 * (fetched, checked against its head layout, hot-swapped, rolled back), into the same workers, and a lane of its
 * own batches the frames to detect across streams. Health follows the pose model alone: without a detector,
 * frames without boxes still get an answer (the whole frame).
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
        const models = new ModelManager<ServingSpec>({ registry, pool, modelName: config.defaultModel, logger, health: server.health, healthServices: [InferenceService.typeName], maxModelBytes: config.limits.maxModelBytes });
        const detectors = config.detectorModel === undefined
          ? undefined
          : new ModelManager<DetectorServingSpec>({ registry, pool: pool.detectors, modelName: config.detectorModel, logger, healthServices: [], maxModelBytes: config.limits.maxModelBytes, specOf: detectorSpecOf });
        const detectorScheduler = detectors === undefined
          ? undefined
          : new BatchScheduler<DetectionJob, DetectionOutcome, DetectorServingSpec>(pool, detectors, {
              maxBatch: config.maxBatch,
              maxWaitMs: config.batchWaitMs,
              lane: "detector",
              run: (version, jobs) => pool.detect(version, jobs),
              // The detector sees whole frames: one input each, whatever the frame's people.
              weigh: () => 1,
            });
        const detector: DetectorStage | undefined = detectors === undefined || detectorScheduler === undefined ? undefined : { scheduler: detectorScheduler, serving: () => detectors.current !== undefined };
        // One lane per model version source: the serving version, and a trial's candidate beside it. Both share
        // the workers; each batches its own frames, since a batch runs on one version.
        const lane = (versions: VersionSource, role: "serving" | "candidate" = "candidate") => {
          const scheduler = new BatchScheduler(pool, versions, { maxBatch: config.maxBatch, maxWaitMs: config.batchWaitMs, lane: role });
          // A frame with no people runs no batch, but its result still names the lane's pose version.
          const poseModel = () => {
            const handle = versions.acquire();
            if (handle !== undefined) versions.release(handle);
            return handle?.ref;
          };
          const options = { limits: config.limits, frameTraceRatio: config.frameTraceRatio, modelName: config.defaultModel, poseModel };
          return { scheduler, processor: new FrameProcessor(scheduler, detector === undefined ? options : { ...options, detector }) };
        };
        const serving = lane(models, "serving");
        const trials = new TrialController({ registry, models, modelName: config.defaultModel, logger, decidedBy: config.instanceId, serving, candidateLane: lane, maxCopiesInFlight: config.workers });
        const detectorAvailability = detectors === undefined ? undefined : { modelName: detectors.modelName, serving: () => detectors.current !== undefined };
        server.register(InferenceService, inferenceService({ processor: trials, models, limits: config.limits, defaultModel: config.defaultModel, logger, ...(detectorAvailability === undefined || detectors === undefined ? {} : { detector: detectorAvailability, detectorModels: detectors }) }));
        return { models, scheduler: serving.scheduler, trials, detectors, detectorScheduler };
      },
    });
    const { models: manager, scheduler, trials, detectors, detectorScheduler } = grpc.registered;
    manager.start();
    detectors?.start();
    trials.start();
    return {
      address: grpc.address,
      server: grpc.server,
      bus,
      models: manager,
      detectors,
      trials,
      stop: async () => {
        await grpc.stop();
        await trials.stop();
        scheduler.close();
        detectorScheduler?.close();
        await manager.stop();
        await detectors?.stop();
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
