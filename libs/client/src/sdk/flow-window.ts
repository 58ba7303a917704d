import { abortReason } from "@poseloop/core";

/**
 * A counting window of frames sent and not yet answered. The request pump takes a slot before each frame and
 * the response reader gives slots back as results (or drop notices) arrive, so a stream never reads more
 * than `size` frames ahead of its answers, whatever the speed of the source.
 */
export class FlowWindow {
  readonly size: number;
  #free: number;
  #closed = false;
  readonly #waiters: { resolve: (open: boolean) => void; signal: AbortSignal | undefined; onAbort: () => void }[] = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`a flow window needs a positive integer size, got ${size}`);
    this.size = size;
    this.#free = size;
  }

  /** Slots taken and not yet given back. */
  get inFlight(): number {
    return this.size - this.#free;
  }

  /** Takes a slot, waiting for one; false once the window is closed (the stream ended). */
  acquire(signal?: AbortSignal): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (signal?.aborted === true) return Promise.reject(abortReason(signal));
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve, reject) => {
      const waiter = {
        resolve,
        signal,
        onAbort: () => {
          const index = this.#waiters.indexOf(waiter);
          if (index >= 0) this.#waiters.splice(index, 1);
          reject(abortReason(signal));
        },
      };
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Gives back `count` slots (more than were taken is ignored: a server may report a frame twice). */
  release(count = 1): void {
    this.#free = Math.min(this.size, this.#free + count);
    while (this.#free > 0 && this.#waiters.length > 0) {
      const waiter = this.#waiters.shift()!;
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      this.#free--;
      waiter.resolve(true);
    }
  }

  /** Ends the window: waiting and later acquires get false. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#waiters.splice(0)) {
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      waiter.resolve(false);
    }
  }
}
