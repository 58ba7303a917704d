/** The p-th percentile (0–100) of sorted values, nearest rank; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p95: number;
  readonly max: number;
}

/** One model version's run of frames in a stream. */
export interface ModelSpan {
  readonly model: string;
  readonly firstFrame: number;
  lastFrame: number;
  frames: number;
}

/**
 * Frame rate and latency of a stream as the client sees it: rate over the last `windowMs` of answers (live)
 * and over the whole stream (summary); latency from handing a frame to gRPC to reading its result.
 */
export class StreamStats {
  readonly #windowMs: number;
  readonly #recent: number[] = [];
  readonly #latencies: number[] = [];
  #recentLatencies: number[] = [];
  #first: number | undefined;
  #last: number | undefined;
  results = 0;
  failed = 0;
  dropped = 0;
  persons = 0;
  readonly models: ModelSpan[] = [];

  constructor(windowMs = 2000) {
    this.#windowMs = windowMs;
  }

  /** Records a result read at `now` (ms), `latencyMs` after its frame was sent. */
  result(now: number, latencyMs: number | undefined, model: string, frameNumber: number, persons: number, ok: boolean): void {
    this.#first ??= now;
    this.#last = now;
    this.results++;
    this.persons = persons;
    if (!ok) this.failed++;
    this.#recent.push(now);
    while (this.#recent.length > 0 && this.#recent[0]! < now - this.#windowMs) this.#recent.shift();
    if (latencyMs !== undefined) {
      this.#latencies.push(latencyMs);
      this.#recentLatencies.push(latencyMs);
      if (this.#recentLatencies.length > 200) this.#recentLatencies = this.#recentLatencies.slice(-100);
    }
    const span = this.models.at(-1);
    if (span !== undefined && span.model === model) {
      span.lastFrame = frameNumber;
      span.frames++;
    } else {
      this.models.push({ model, firstFrame: frameNumber, lastFrame: frameNumber, frames: 1 });
    }
  }

  /** Answers per second over the last window (the live figure). */
  get fps(): number {
    if (this.#recent.length < 2) return 0;
    const span = this.#recent.at(-1)! - this.#recent[0]!;
    return span > 0 ? ((this.#recent.length - 1) * 1000) / span : 0;
  }

  /** Answers per second from the first answer to the last. */
  get overallFps(): number {
    if (this.#first === undefined || this.#last === undefined || this.results < 2) return 0;
    const span = this.#last - this.#first;
    return span > 0 ? ((this.results - 1) * 1000) / span : 0;
  }

  /** Latency percentiles of the recent answers, or of all of them. */
  latency(all = false): LatencySummary {
    const sorted = [...(all ? this.#latencies : this.#recentLatencies)].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p95: percentile(sorted, 95), max: sorted.at(-1) ?? Number.NaN };
  }
}

/** "12 ms", "1.2 ms", or "-" when unknown. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(0)} ms`;
}
