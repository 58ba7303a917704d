import { ModelRegistry, openBus, type Bus } from "@poseloop/bus";
import type { Logger } from "@poseloop/core";
import { startGrpcServer, type ListenAddress } from "@poseloop/grpc";
import type { TrainerConfig } from "./config.js";

/** A running trainer: its gRPC address and how to stop it. */
export interface TrainerProcess {
  readonly address: ListenAddress;
  readonly bus: Bus;
  /** Drains open calls (up to the configured timeout) and closes the bus. */
  stop(): Promise<void>;
}

/**
 * Starts the trainer: opens the bus and the model registry, then serves gRPC with health and reflection.
 * TrainerService itself is registered by the training-service work that builds on this process.
 */
export async function startTrainer(config: TrainerConfig, logger: Logger): Promise<TrainerProcess> {
  const bus = await openBus({ ...config.bus, logger });
  try {
    await ModelRegistry.open(bus, logger);
    const grpc = await startGrpcServer(config.grpc, { logger, service: "trainer", fields: { bus: bus.kind, bus_location: bus.location } });
    return {
      address: grpc.address,
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
