import type { Readable, Writable } from "node:stream";
import { raceAbort } from "@poseloop/core";

/**
 * Reads a grpc-js object stream as an async iterable, keeping its flow control: the stream is only read as
 * fast as the consumer pulls. Breaking out of the loop does not destroy the stream (a duplex call may still
 * be writing responses). An abort ends a waiting read with the abort reason.
 *
 * It pulls with `read()` and waits on events rather than using `stream.iterator()`: Node's iterator destroys
 * the stream when an error is emitted while a read is pending, and a server handler that fails that way emits
 * its status as an 'error' on the very call it reads from — destroyed, the call never sent the status.
 */
export async function* readStream<T>(stream: Readable, signal: AbortSignal, mapError: (e: unknown) => unknown = (e) => e): AsyncGenerator<T> {
  let failure: unknown;
  let wake: (() => void) | undefined;
  // Listening for 'error' for the whole read also keeps an error emitted between two reads from going unheard.
  const onError = (error: unknown): void => {
    failure ??= error;
    wake?.();
  };
  const onChange = (): void => wake?.();
  stream.on("error", onError);
  stream.on("readable", onChange);
  stream.on("end", onChange);
  stream.on("close", onChange);
  try {
    for (;;) {
      if (failure !== undefined) throw mapError(failure);
      const value = stream.read() as T | null;
      if (value !== null) {
        yield value;
        continue;
      }
      if (stream.readableEnded) return;
      if (stream.destroyed) {
        throw mapError(stream.errored ?? Object.assign(new Error("the stream closed before its end"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
      }
      try {
        await raceAbort(
          new Promise<void>((resolve) => {
            wake = resolve;
          }),
          signal,
        );
      } catch (error) {
        throw mapError(error);
      } finally {
        wake = undefined;
      }
    }
  } finally {
    stream.off("readable", onChange);
    stream.off("end", onChange);
    stream.off("close", onChange);
    // An error after the reader stopped (the CANCELLED of a call the consumer left early) has nobody left to
    // tell; without a listener, emitting it would throw. Node's own iterator leaves one behind for the same reason.
    stream.off("error", onError);
    stream.on("error", ignore);
  }
}

function ignore(): void {}

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
