// An inference worker thread: owns onnxruntime sessions (one per loaded model version, pose models and person
// detectors) and runs whole batches.
import { workerData } from "node:worker_threads";
import { AppError, Code, serveWorkerRpc, Transfer } from "@poseloop/core";
import type { FrameJob } from "@poseloop/estimator";
import { PoseEstimator, type PoseEstimatorOptions } from "@poseloop/estimator";
import type { ServingSpec } from "@poseloop/estimator";
import type { DetectorServingSpec } from "./detector-spec.js";
import { checkWarmUp, modelFailureReason, warmUpFrames } from "./load-check.js";
import { PersonDetector, type DetectionJob } from "./person-detector.js";

const engine = new PoseEstimator(workerData as PoseEstimatorOptions);
const detector = new PersonDetector(workerData as PoseEstimatorOptions);

/**
 * Loads a version and proves it serves what the scheduler will send: a full batch of real-looking frames
 * through the whole pipeline, with finite keypoints for every one. The estimator's own check runs one blank
 * crop, which a model with its batch fixed at 1, a baked-in Reshape or NaN weights passes.
 */
async function load(spec: ServingSpec, bytes: Uint8Array, batch: number): Promise<void> {
  await engine.load(spec, bytes);
  try {
    const outcomes = await engine.infer(spec.version, warmUpFrames(spec, batch)).catch((error: unknown) => {
      throw new AppError(Code.FAILED_PRECONDITION, `version ${spec.version} failed its warm-up at batch ${batch} (the largest batch this inferencer sends): ${modelFailureReason(error)}`, { cause: error });
    });
    checkWarmUp(spec.version, batch, outcomes);
  } catch (error) {
    await engine.release(spec.version);
    throw error;
  }
}

serveWorkerRpc({
  load: ({ spec, bytes, batch }: { spec: ServingSpec | DetectorServingSpec; bytes: Uint8Array; batch?: number }) =>
    "kind" in spec && spec.kind === "detector" ? detector.load(spec, bytes, Math.max(1, batch ?? 1)) : load(spec as ServingSpec, bytes, Math.max(1, batch ?? 1)),
  release: ({ version, kind }: { version: string; kind?: "pose" | "detector" }) => (kind === "detector" ? detector.release(version) : engine.release(version)),
  infer: ({ version, frames }: { version: string; frames: FrameJob[] }) => engine.infer(version, frames),
  detect: async ({ version, jobs }: { version: string; jobs: DetectionJob[] }) => {
    const outcomes = await detector.detect(version, jobs);
    // The decoded frames go back to the pose stage: moved, not copied, where a frame owns its whole buffer.
    const buffers = new Set<ArrayBuffer>();
    for (const outcome of outcomes) {
      const data = outcome.ok ? outcome.image.data : undefined;
      if (data !== undefined && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer) buffers.add(data.buffer);
    }
    return new Transfer(outcomes, [...buffers]);
  },
  close: async () => {
    await engine.close();
    await detector.close();
  },
});
