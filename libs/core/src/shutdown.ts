import type { Logger } from "./logger.js";

/**
 * Runs `stop` once on the first SIGINT or SIGTERM, then exits with code 0 (1 if `stop` throws). A second
 * signal while stopping exits at once with code 130, for an operator who does not want to wait for a drain.
 */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn("second signal: exiting without waiting", { signal });
      process.exit(130);
    }
    stopping = true;
    logger.info("stopping", { signal });
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error("stop failed", { err: error });
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}
