import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { serveWorkerRpc } from "@poseloop/core";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { StartSweepRequestSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { checkSweep, resolveTrialConfigs } from "./sweep-check.js";

/** The sweep-checking worker: one sweep (or one stage's trials) per worker, started by sweep-check.ts. */
serveWorkerRpc({
  ready: () => true,
  check: ({ request }: { request: Uint8Array }) => {
    const { stages, trials, problems, base } = checkSweep(fromBinary(StartSweepRequestSchema, request));
    return { stages, trials, problems, ...(base === undefined ? {} : { base: toBinary(TrainConfigSchema, base) }) };
  },
  configs: ({ yaml, overrides }: { yaml: string; overrides: Record<string, string>[] }) => {
    const { configs, problems } = resolveTrialConfigs(yaml, overrides);
    return { configs: configs.map((config) => (config === undefined ? undefined : toBinary(TrainConfigSchema, config))), problems };
  },
});
