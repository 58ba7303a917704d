import type { Readable, Writable } from "node:stream";
import { raceAbort } from "@poseloop/core";

/**
 * Reads a grpc-js object stream as an async iterable, keeping its flow control: the stream is only read as
 * fast as the consumer pulls. Breaking out of the loop does not destroy the stream (a duplex call may still
 * be writing responses). An abort ends a waiting read with the abort reason.
 */
export async function* readStream<T>(stream: Readable, signal: AbortSignal, mapError: (e: unknown) => unknown = (e) => e): AsyncGenerator<T> {
  const iterator = stream.iterator({ destroyOnReturn: false }) as AsyncIterator<T>;
  for (;;) {
    let result: IteratorResult<T>;
    try {
      result = await raceAbort(iterator.next(), signal);
    } catch (error) {
      throw mapError(error);
    }
    if (result.done === true) return;
    yield result.value;
  }
}

/**
 * Writes every message of `source` to a grpc-js object stream, waiting for 'drain' whenever the stream's
 * buffer is full, so that a slow reader slows the producer instead of growing memory. Stops early, returning
 * the source's iterator, when `signal` aborts.
 */
export async function writeAll<T, M>(
  stream: Writable,
  source: AsyncIterable<T>,
  toMessage: (item: T) => M,
  signal: AbortSignal,
): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const result = await raceAbort(iterator.next(), signal);
      if (result.done === true) return;
      if (!stream.write(toMessage(result.value))) await waitForDrain(stream, signal);
    }
  } catch (error) {
    // Let the source clean up (a generator's finally blocks) without waiting on it: it may be stuck.
    void iterator.return?.()?.catch(() => undefined);
    throw error;
  }
}

function waitForDrain(stream: Writable, signal: AbortSignal): Promise<void> {
  return raceAbort(
    new Promise<void>((resolve) => {
      const done = (): void => {
        stream.off("drain", done);
        stream.off("close", done);
        resolve();
      };
      stream.on("drain", done);
      stream.on("close", done);
    }),
    signal,
  );
}
