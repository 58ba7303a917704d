export { findNatsServerBinary, NatsServer } from "./nats-server.js";
export type { NatsServerOptions } from "./nats-server.js";
export { childProcesses, freePort, makeTempDir, take, variablesRead, waitFor } from "./helpers.js";
export { spawnService } from "./service-process.js";
export type { ServiceProcess } from "./service-process.js";
