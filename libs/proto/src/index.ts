import type { DescFile } from "@bufbuild/protobuf";
import { file_grpc_health_v1_health } from "./gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "./gen/grpc/reflection/v1/reflection_pb.js";
import { file_onnx_onnx } from "./gen/onnx/onnx_pb.js";
import { file_poseloop_common_v1_metrics } from "./gen/poseloop/common/v1/metrics_pb.js";
import { file_poseloop_common_v1_model } from "./gen/poseloop/common/v1/model_pb.js";
import { file_poseloop_common_v1_pose } from "./gen/poseloop/common/v1/pose_pb.js";
import { file_poseloop_common_v1_status } from "./gen/poseloop/common/v1/status_pb.js";
import { file_poseloop_inference_v1_inference } from "./gen/poseloop/inference/v1/inference_pb.js";
import { file_poseloop_registry_v1_registry } from "./gen/poseloop/registry/v1/registry_pb.js";
import { file_poseloop_trainer_v1_config } from "./gen/poseloop/trainer/v1/config_pb.js";
import { file_poseloop_trainer_v1_trainer } from "./gen/poseloop/trainer/v1/trainer_pb.js";

/**
 * Every .proto file of PoseLoop's own contracts, for server reflection and for registries that resolve
 * messages by name. Message types themselves are imported from their generated modules, e.g.
 * `@poseloop/proto/poseloop/inference/v1/inference_pb`.
 */
export const poseloopFiles: readonly DescFile[] = [
  file_poseloop_common_v1_status,
  file_poseloop_common_v1_pose,
  file_poseloop_common_v1_metrics,
  file_poseloop_common_v1_model,
  file_poseloop_inference_v1_inference,
  file_poseloop_trainer_v1_config,
  file_poseloop_trainer_v1_trainer,
  file_poseloop_registry_v1_registry,
];

/** The ONNX IR schema (onnx/onnx.proto). */
export const onnxFile: DescFile = file_onnx_onnx;

/** The standard gRPC health and reflection protocols. */
export const grpcStandardFiles: readonly DescFile[] = [file_grpc_health_v1_health, file_grpc_reflection_v1_reflection];
