// A PoseDataLoader worker thread: decodes, warps and encodes whole batches, so the thread that trains never does.
import { AppError, Code, serveWorkerRpc, Transfer } from "@poseloop/core";
import { batchBuffers, TopDownBatchBuilder, type BatchBuilderConfig, type BatchRequest } from "./top-down-batch.js";

let builder: TopDownBatchBuilder | undefined;

serveWorkerRpc({
  init: (config: BatchBuilderConfig) => {
    builder = new TopDownBatchBuilder(config);
  },
  batch: async (request: BatchRequest) => {
    if (builder === undefined) throw new AppError(Code.FAILED_PRECONDITION, "the loader worker was not initialized");
    const batch = await builder.build(request);
    return new Transfer(batch, batchBuffers(batch));
  },
  stats: () => builder?.images.stats,
});
