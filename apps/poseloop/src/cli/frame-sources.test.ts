import { describe, expect, it } from "vitest";
import { LatestFrame } from "./frame-sources.js";

/** A source that sends frames 0, 1, 2... every `intervalMs`, then ends (or fails). */
async function* camera(count: number, intervalMs: number, failAt?: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < count; i++) {
    if (i === failAt) throw new Error("camera unplugged");
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    yield Uint8Array.of(i);
  }
}

describe("LatestFrame", () => {
  it("hands a slow consumer the newest frame and counts the ones it missed", async () => {
    const latest = new LatestFrame(camera(20, 2));
    const seen: number[] = [];
    const stamps: number[] = [];
    for await (const frame of latest.frames()) {
      seen.push(frame.data[0] as number);
      stamps.push(frame.ptsUs);
      await new Promise((resolve) => setTimeout(resolve, 9));
    }
    expect(seen.at(-1)).toBe(19);
    expect(seen.length).toBeLessThan(15);
    expect(seen.length + latest.skipped).toBe(20);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    expect(stamps[0]).toBe(0);
    expect([...stamps].sort((a, b) => a - b)).toEqual(stamps);
  });

  it("ends on abort while the source sends nothing, and passes on a source's failure", async () => {
    const controller = new AbortController();
    const stalled = new LatestFrame(camera(2, 60_000), controller.signal);
    setTimeout(() => controller.abort(), 20);
    const frames: unknown[] = [];
    for await (const frame of stalled.frames()) frames.push(frame);
    expect(frames).toEqual([]);

    const failing = new LatestFrame(camera(5, 1, 3));
    await expect(
      (async () => {
        for await (const _ of failing.frames()) await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
    ).rejects.toThrow("camera unplugged");
  });
});
