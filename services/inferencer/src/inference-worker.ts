// An inference worker thread: owns onnxruntime sessions (one per loaded model version) and runs whole batches.
import { workerData } from "node:worker_threads";
import { serveWorkerRpc } from "@poseloop/core";
import type { FrameJob } from "@poseloop/estimator";
import { PoseEstimator, type PoseEstimatorOptions } from "@poseloop/estimator";
import type { ServingSpec } from "@poseloop/estimator";

const engine = new PoseEstimator(workerData as PoseEstimatorOptions);

serveWorkerRpc({
  load: ({ spec, bytes }: { spec: ServingSpec; bytes: Uint8Array }) => engine.load(spec, bytes),
  release: ({ version }: { version: string }) => engine.release(version),
  infer: ({ version, frames }: { version: string; frames: FrameJob[] }) => engine.infer(version, frames),
  close: () => engine.close(),
});
