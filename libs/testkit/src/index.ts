export { findNatsServerBinary, NatsServer } from "./nats-server.js";
export type { NatsServerOptions } from "./nats-server.js";
export { freePort, makeTempDir, take, waitFor } from "./helpers.js";
