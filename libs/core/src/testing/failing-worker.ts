// A worker for worker-rpc tests: one operation per kind of failure.
import { AppError, Code } from "../app-error.js";
import { serveWorkerRpc } from "../worker-rpc.js";

serveWorkerRpc({
  native: () => {
    throw new Error("/build/onnxruntime/core/session/inference_session.cc:1589 onnxruntime::InferenceSession::Initialize() [ONNXRuntimeError] : 1 : FAIL");
  },
  refused: () => {
    throw new AppError(Code.INVALID_ARGUMENT, "the model has no input named images", { problems: ["no input named images"] });
  },
  echo: (value: number) => value,
});
