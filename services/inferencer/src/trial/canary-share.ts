import { createHash } from "node:crypto";

/**
 * Where a stream key falls in [0, 1): the first 32 bits of its SHA-256. The same key lands in the same place on
 * every inferencer and after every restart, so a camera that reconnects, or moves to another replica, stays on
 * the same side of a canary; and keys spread evenly whatever they look like ("cam-1", "cam-2", ...).
 */
export function streamPosition(streamKey: string): number {
  return createHash("sha256").update(streamKey).digest().readUInt32BE(0) / 2 ** 32;
}

/** Whether the stream keyed `streamKey` is in a canary's share `fraction` of streams. */
export function inCanaryShare(streamKey: string, fraction: number): boolean {
  return streamPosition(streamKey) < fraction;
}
