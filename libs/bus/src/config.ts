import type { EnvReader } from "@poseloop/core";
import type { BusOptions } from "./open-bus.js";

/**
 * The bus settings every service reads: POSELOOP_NATS_URL (comma-separated nats:// URLs; unset: the embedded
 * bus) and POSELOOP_BUS_DIR (the embedded bus's directory, shared by the services of one machine).
 */
export function busOptionsFromEnv(env: EnvReader, name: string): Omit<BusOptions, "logger"> {
  const servers = env.list("POSELOOP_NATS_URL", { default: [] });
  for (const server of servers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s/]+(:\d+)?\/?$/.test(server) && !/^[^\s:/]+:\d+$/.test(server)) {
      env.problem(`POSELOOP_NATS_URL entry ${JSON.stringify(server)} is not a NATS URL (nats://host:4222)`);
    }
  }
  return { natsServers: servers, embeddedDir: env.string("POSELOOP_BUS_DIR", { default: ".poseloop/bus" }), name };
}
