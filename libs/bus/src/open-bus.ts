import type { Logger } from "@poseloop/core";
import { EmbeddedBus } from "./embedded/bus.js";
import { NatsBus } from "./nats/bus.js";
import type { NatsSecurityOptions } from "./nats/connection.js";
import type { Bus } from "./types.js";

export interface BusOptions {
  /** NATS server URLs; empty: the embedded bus in `embeddedDir`. */
  natsServers: readonly string[];
  embeddedDir: string;
  /** Client name on NATS. */
  name?: string;
  logger?: Logger;
  /** How the service proves itself to NATS and checks the server (credentials, nkey, user/password, token, TLS). */
  natsSecurity?: NatsSecurityOptions;
}

/** The bus a service runs on: NATS when servers are configured, otherwise the embedded one. */
export async function openBus(options: BusOptions): Promise<Bus> {
  if (options.natsServers.length === 0) return EmbeddedBus.open(options.embeddedDir);
  return NatsBus.connect({
    servers: options.natsServers,
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.natsSecurity === undefined ? {} : { security: options.natsSecurity }),
  });
}
