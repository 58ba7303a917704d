import { toBinary } from "@bufbuild/protobuf";
import { serveWorkerRpc, Transfer } from "@poseloop/core";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { checkExperiment } from "./experiment.js";

/** The experiment-checking worker: one file per worker, started by checkExperimentOffThread. */
serveWorkerRpc({
  ready: () => true,
  check: ({ yaml, overrides }: { yaml: string; overrides: Record<string, string> }) => {
    const { config, problems } = checkExperiment(yaml, overrides);
    if (config === undefined) return { problems };
    const bytes = toBinary(TrainConfigSchema, config);
    return new Transfer({ config: bytes, problems }, [bytes.buffer]);
  },
});
