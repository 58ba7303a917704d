import { abortReason } from "./async.js";

/**
 * A FIFO that producers push into and one consumer iterates with `for await`. Ends after `close()` once
 * drained, or throws what `fail()` was given; an abort signal ends a waiting consumer early. When `limit` is
 * set, `push` refuses (returns false) once that many items wait, so a slow consumer cannot grow memory.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  readonly #limit: number;
  #waiter: ((result: IteratorResult<T>) => void) | undefined;
  #waiterReject: ((error: unknown) => void) | undefined;
  #closed = false;
  #error: unknown;
  #failed = false;

  constructor(options: { limit?: number } = {}) {
    this.#limit = options.limit ?? Number.POSITIVE_INFINITY;
  }

  get size(): number {
    return this.#items.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Adds an item; false when the queue is closed or full. */
  push(item: T): boolean {
    if (this.#closed) return false;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#clearWaiter();
      waiter({ value: item, done: false });
      return true;
    }
    if (this.#items.length >= this.#limit) return false;
    this.#items.push(item);
    return true;
  }

  /** Ends the iteration once the queued items are consumed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#clearWaiter();
      waiter({ value: undefined, done: true });
    }
  }

  /** Ends the iteration with `error` once the queued items are consumed. */
  fail(error: unknown): void {
    if (this.#closed) return;
    this.#failed = true;
    this.#error = error;
    this.#closed = true;
    const reject = this.#waiterReject;
    if (reject !== undefined) {
      this.#clearWaiter();
      reject(error);
    }
  }

  /** The next item, waiting for one; done when closed and empty. */
  next(signal?: AbortSignal): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift() as T, done: false });
    if (this.#closed) return this.#failed ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
    if (signal?.aborted === true) return Promise.reject(abortReason(signal));
    if (this.#waiter !== undefined) return Promise.reject(new Error("AsyncQueue supports one waiting consumer"));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#clearWaiter();
        reject(abortReason(signal));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiter = (result) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(result);
      };
      this.#waiterReject = (error) => {
        signal?.removeEventListener("abort", onAbort);
        reject(error);
      };
    });
  }

  /** Iterates until closed; with a signal, an abort ends the iteration with the abort's reason. */
  async *iterate(signal?: AbortSignal): AsyncGenerator<T, void, undefined> {
    for (;;) {
      const result = await this.next(signal);
      if (result.done === true) return;
      yield result.value;
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.iterate();
  }

  #clearWaiter(): void {
    this.#waiter = undefined;
    this.#waiterReject = undefined;
  }
}
