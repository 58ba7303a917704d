import type {} from "vitest";
import type { TestProject } from "vitest/node";
import { NatsServer } from "./nats-server.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the nats-server shared by the integration tests (nats://127.0.0.1:<port>). */
    natsUrl: string;
  }
}

/**
 * Starts one nats-server with JetStream on a free port and a temporary store for the integration project;
 * tests read its URL with `inject("natsUrl")`. Tests that stop or restart a broker start their own.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await NatsServer.start();
  project.provide("natsUrl", server.url);
  return async () => {
    await server.dispose();
  };
}
