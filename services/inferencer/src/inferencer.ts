import { ModelRegistry, openBus, type Bus } from "@poseloop/bus";
import type { Logger } from "@poseloop/core";
import { startGrpcServer, type GrpcServer, type ListenAddress } from "@poseloop/grpc";
import type { InferencerConfig } from "./config.js";

/** A running inferencer: its gRPC address and how to stop it. */
export interface InferencerProcess {
  readonly address: ListenAddress;
  readonly server: GrpcServer;
  readonly bus: Bus;
  stop(): Promise<void>;
}

/**
 * Starts the inferencer: opens the bus and the model registry, then serves gRPC with health and reflection.
 * Health stays NOT_SERVING until a model version is loaded, so that load balancers and Kubernetes readiness
 * probes send no frames to an inferencer that cannot answer them.
 */
export async function startInferencer(config: InferencerConfig, logger: Logger): Promise<InferencerProcess> {
  const bus = await openBus({ ...config.bus, logger });
  try {
    await ModelRegistry.open(bus, logger);
    const grpc = await startGrpcServer(config.grpc, {
      logger,
      service: "inferencer",
      initialHealth: "NOT_SERVING",
      fields: { bus: bus.kind, bus_location: bus.location, model: config.defaultModel },
    });
    return {
      address: grpc.address,
      server: grpc.server,
      bus,
      stop: async () => {
        await grpc.stop();
        await bus.close();
      },
    };
  } catch (error) {
    await bus.close();
    throw error;
  }
}
