// The warm-up checks moved to @poseloop/estimator (the trainer checks imported models with them too).
export { checkWarmUp, modelFailureReason, warmUpFrames, warmUpImage } from "@poseloop/estimator";
