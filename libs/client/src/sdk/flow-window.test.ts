import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { FlowWindow } from "./flow-window.js";

describe("FlowWindow", () => {
  it("hands out `size` slots, then waits for releases in order", async () => {
    const window = new FlowWindow(2);
    expect(await window.acquire()).toBe(true);
    expect(await window.acquire()).toBe(true);
    const order: number[] = [];
    const third = window.acquire().then(() => order.push(3));
    const fourth = window.acquire().then(() => order.push(4));
    await Promise.resolve();
    expect(order).toEqual([]);
    window.release();
    await third;
    expect(order).toEqual([3]);
    window.release(5);
    await fourth;
    expect(window.inFlight).toBe(1);
  });

  it("answers false to waiting and later acquires once closed, and rejects on abort", async () => {
    const window = new FlowWindow(1);
    await window.acquire();
    const waiting = window.acquire();
    window.close();
    expect(await waiting).toBe(false);
    expect(await window.acquire()).toBe(false);

    const other = new FlowWindow(1);
    await other.acquire();
    const controller = new AbortController();
    const aborted = other.acquire(controller.signal);
    controller.abort();
    await expect(aborted).rejects.toSatisfy((e) => AppError.is(e, Code.CANCELLED));
  });
});
