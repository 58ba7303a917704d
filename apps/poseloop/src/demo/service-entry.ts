import { fileURLToPath } from "node:url";

/**
 * The built entry point of a service, through its package's exported `./main` (dist/main.js): the demo and
 * `npm start -- --serve` run each service as its own process, as a deployment does, never by a path into
 * another package's folder.
 */
export function serviceEntry(service: "trainer" | "inferencer"): string {
  return fileURLToPath(import.meta.resolve(`@poseloop/${service}/main`));
}
