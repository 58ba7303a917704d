import { sleep } from "@poseloop/core";

/**
 * Follows a registry watch and hands its entries to `handle` one at a time; while one is being handled only the
 * newest entry that arrived meanwhile is kept, so a burst of changes costs one handling of the last. A watch that
 * fails (the bus went away) is opened again after a backoff of 250 ms doubling to 10 s, one that ends is opened
 * again at once, until `signal` aborts. `handle` reports its own failures: it must not throw.
 */
export async function followNewest<T>(
  watch: (signal: AbortSignal) => AsyncIterable<T>,
  handle: (entry: T) => Promise<void>,
  options: { readonly signal: AbortSignal; readonly onWatchError: (error: unknown, retryMs: number) => void },
): Promise<void> {
  const { signal } = options;
  let backoff = 250;
  while (!signal.aborted) {
    try {
      let latest: { entry: T } | undefined;
      let handling: Promise<void> | undefined;
      for await (const entry of watch(signal)) {
        backoff = 250;
        latest = { entry };
        handling ??= (async () => {
          while (latest !== undefined) {
            const next = latest.entry;
            latest = undefined;
            await handle(next);
          }
          handling = undefined;
        })();
      }
    } catch (error) {
      if (signal.aborted) return;
      options.onWatchError(error, backoff);
      await sleep(backoff, signal).catch(() => undefined);
      backoff = Math.min(backoff * 2, 10_000);
    }
  }
}
