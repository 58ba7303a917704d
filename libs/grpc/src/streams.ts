import type { Readable, Writable } from "node:stream";
import { abortReason, raceAbort } from "@poseloop/core";

/**
 * Reads a grpc-js object stream as an async iterable, keeping its flow control: the stream is only read as
 * fast as the consumer pulls. Breaking out of the loop does not destroy the stream (a duplex call may still
 * be writing responses). Once `signal` aborts, the next read (or the one waiting) fails with the abort reason,
 * even when messages are buffered: a client's call is cancelled only when its reader ends.
 *
 * It pulls with `read()` and waits on events rather than using `stream.iterator()`: Node's iterator destroys
 * the stream when an 'error' is emitted while a read is pending, and a server handler that fails emits its
 * status as an 'error' on the very call it reads from — destroyed, the call never sent the status.
 */
export async function* readStream<T>(stream: Readable, signal: AbortSignal, mapError: (e: unknown) => unknown = (e) => e): AsyncGenerator<T> {
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  // Listening for 'error' for the whole read also keeps an error emitted between two reads from going unheard.
  const onError = (error: unknown): void => {
    failure ??= { error };
    wake?.();
  };
  const onChange = (): void => wake?.();
  stream.on("error", onError);
  stream.on("readable", onChange);
  stream.on("end", onChange);
  stream.on("close", onChange);
  try {
    for (;;) {
      if (signal.aborted) throw mapError(abortReason(signal));
      // Messages that arrived before an error are delivered first, as Node's iterator did (a grpc-js client
      // call pushes its last messages, then emits a failed status as 'error').
      const value = stream.destroyed ? null : (stream.read() as T | null);
      if (value !== null) {
        yield value;
        continue;
      }
      if (failure !== undefined) throw mapError(failure.error);
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
    stream.off("error", onError);
    // An error after the reader stopped (the CANCELLED of a call the consumer left early) has nobody left to
    // tell; without a listener, emitting it would throw. Node's iterator leaves one behind for the same reason.
    if (!stream.listeners("error").includes(ignoreError)) stream.on("error", ignoreError);
  }
}

function ignoreError(): void {}

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
