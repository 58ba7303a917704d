import { create, toBinary } from "@bufbuild/protobuf";
import type { ModelRegistry, PublishRequest } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelManifestSchema, ModelRefSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { describe, expect, it } from "vitest";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import type { ExportOutcome } from "./model-export.js";
import { labelProblems, Publisher } from "./publisher.js";

/** A registry that keeps what it was asked to publish. */
function recordingRegistry() {
  const published: PublishRequest[] = [];
  const registry = {
    publish: (request: PublishRequest) => {
      published.push(request);
      const manifest = create(ModelManifestSchema, request.manifest);
      manifest.model = create(ModelRefSchema, { name: manifest.model?.name ?? "", version: "v1" });
      return Promise.resolve({ manifest });
    },
  } as unknown as ModelRegistry;
  return { registry, published };
}

const outcome: ExportOutcome = {
  fp32: new Uint8Array([1]),
  int8: undefined,
  weights: new Uint8Array([2]),
  fp32Metrics: toBinary(KeypointMetricsSchema, create(KeypointMetricsSchema, { ap: 0.5 })),
  int8Metrics: undefined,
  gate: undefined,
  epoch: 3,
  step: 30,
  sizes: { fp32: 1, int8: 0 },
};

describe("a published manifest's provenance", () => {
  it("is the trainer's, whatever labels the job carries", async () => {
    const { registry, published } = recordingRegistry();
    const log = { append: () => Promise.resolve(), recordPublished: () => Promise.resolve() };
    const target = {
      jobId: "job-20261205-063000-abcdef",
      config: tinyTrainConfig(),
      // A job recorded before labels were checked at submission.
      labels: { checkpoint: "e9999-forged", experiment: "forged", team: "pose" },
      checkpointId: "e0003-s0000030",
      modelName: "tiny",
      promote: false,
    };
    await new Publisher(registry, silentLogger).publish(() => Promise.resolve(outcome), target, log);
    expect(published[0]?.manifest.labels).toEqual({ checkpoint: "e0003-s0000030", experiment: "tiny", team: "pose" });
  });
});

describe("labelProblems", () => {
  it("refuses labels that would pose as provenance, and malformed or oversized ones", () => {
    expect(labelProblems({ checkpoint: "e9999-forged", Experiment: "x", "poseloop.job": "y" })).toEqual([
      'labels: "checkpoint" is set by the trainer itself (the provenance of a published model), not by a client',
      'labels: "Experiment" is set by the trainer itself (the provenance of a published model), not by a client',
      'labels: "poseloop.job" is set by the trainer itself (the provenance of a published model), not by a client',
    ]);
    expect(labelProblems({ "bad key": "v", ok: "x".repeat(300) })).toEqual([
      "labels: \"bad key\" must be 1-63 letters, digits, '.', '_', '/' or '-', starting with a letter or digit",
      'labels: the value of "ok" is 300 characters; the limit is 256',
    ]);
    expect(labelProblems(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])))).toEqual(["labels: 65 labels; the limit is 64"]);
    expect(labelProblems({ suite: "trainer", "team/owner": "pose-1" })).toEqual([]);
  });
});
