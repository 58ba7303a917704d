import { create } from "@bufbuild/protobuf";
import { ModelManifestSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { afterEach, describe, expect, it } from "vitest";
import { fakeJob, startFakeTrainer } from "@poseloop/client/testing";
import { captureIo } from "../testing/capture-io.js";
import { protoJson, shortestFloat32 } from "./json-output.js";
import { runCli } from "./run-cli.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe("shortestFloat32", () => {
  it("gives the shortest decimal that is the same float32", () => {
    for (const decimal of [0.9, 0.999, 1e-8, 0.1, 123.675, 58.395, 0.705, 3.4028234663852886e38, 1.401298464324817e-45, 16777216, -2.5, 0]) {
      const single = Math.fround(decimal);
      const shortest = shortestFloat32(single);
      expect(Math.fround(shortest)).toBe(single);
      expect(String(shortest).length, `${decimal}`).toBeLessThanOrEqual(String(decimal).length);
    }
    expect(shortestFloat32(Math.fround(0.9))).toBe(0.9);
    expect(shortestFloat32(Math.fround(1e-8))).toBe(1e-8);
    expect(shortestFloat32(Math.fround(123.675))).toBe(123.675);
  });
});

describe("protoJson", () => {
  it("prints fields at their zero value and float fields as the decimals they were written as", () => {
    const manifest = create(ModelManifestSchema, {
      input: { mean: [Math.fround(123.675), Math.fround(116.28)], std: [Math.fround(58.395)] },
      keypointSchema: { skeleton: [{ fromIndex: 0, toIndex: 1 }], oksSigmas: [Math.fround(0.026)] },
      codec: { kind: { case: "heatmap", value: { width: 48, height: 64, sigma: Math.fround(2.1) } } },
      metrics: { ap: Math.fround(0.705) },
      labels: { experiment: "demo" },
    });
    const json = protoJson(ModelManifestSchema, manifest) as {
      input: { mean: number[]; std: number[]; maxBatch: number };
      keypointSchema: { skeleton: { fromIndex: number; toIndex: number }[]; oksSigmas: number[] };
      codec: { heatmap: { sigma: number; unbiased: boolean } };
      metrics: { ap: number; ar: number };
      trainingJobId: string;
    };
    expect(json.keypointSchema.skeleton).toEqual([{ fromIndex: 0, toIndex: 1 }]);
    expect(json.input).toMatchObject({ mean: [123.675, 116.28], std: [58.395], maxBatch: 0 });
    expect(json.keypointSchema.oksSigmas).toEqual([0.026]);
    expect(json.codec.heatmap).toMatchObject({ sigma: 2.1, unbiased: false });
    expect(json.metrics).toMatchObject({ ap: 0.705, ar: 0 });
    expect(json.trainingJobId).toBe("");
  });

  it("leaves double fields as JavaScript prints them", async () => {
    const server = await startFakeTrainer({
      jobs: [fakeJob({ jobId: "job-1", state: JobState.SUCCEEDED, config: { optimizer: { lr: 0.1 + 0.2, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 } } })],
    });
    cleanups.push(() => server.stop());
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["jobs", "--json"], io)).toBe(0);
    const text = io.stdoutText();
    // beta1 is a float: 0.9 came back from the trainer as 0.8999999761581421, and prints as 0.9 again.
    expect(text).toContain('"beta1": 0.9,');
    expect(text).toContain('"beta2": 0.999,');
    expect(text).toContain('"epsilon": 1e-8');
    // lr is a double: printed as it is, noise and all.
    expect(text).toContain('"lr": 0.30000000000000004,');
    // A zero is printed, not left out.
    expect(text).toContain('"momentum": 0,');
  });
});
