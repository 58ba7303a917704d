export { PoseloopClient } from "./sdk/poseloop-client.js";
export type { PoseloopClientOptions } from "./sdk/poseloop-client.js";
export { TrainerClient } from "./sdk/trainer-client.js";
export type { EvaluateOptions, ImportModelOptions, ListJobsOptions, PublishCheckpointOptions, StartSweepOptions, StartTrainingOptions, WatchJobOptions } from "./sdk/trainer-client.js";
export { Delivery, InferenceClient, PERSON_SOURCES } from "./sdk/inference-client.js";
export type { DetectOptions, KeypointStreamOptions, PersonSourceName } from "./sdk/inference-client.js";
export { encodedFormatOf, PixelLayout, toFrameMessage } from "./sdk/frame-input.js";
export type { FrameInput, PersonBox, RawFrameImage } from "./sdk/frame-input.js";
export {
  connectionsFromEnv,
  DEFAULT_CALL_TIMEOUT_MS,
  DEFAULT_INFERENCER_ADDRESS,
  DEFAULT_TRAINER_ADDRESS,
  resolveConnection,
} from "./sdk/client-options.js";
export type { ConnectionOptions, RequestOptions, ResolvedConnection } from "./sdk/client-options.js";
export { FlowWindow } from "./sdk/flow-window.js";
