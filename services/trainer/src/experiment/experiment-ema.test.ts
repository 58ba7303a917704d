import { create } from "@bufbuild/protobuf";
import { EmaSpecSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { describe, expect, it } from "vitest";
import { emaConfig } from "../runner/training-run.js";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { parseExperiment } from "./experiment.js";
import { resolveTrainConfig } from "./validate.js";

const experiment = (ema: string): string =>
  ["DATASET:", "  DATASET: synthetic", "MODEL:", "  NAME: pose_lite", "  IMAGE_SIZE: [48, 64]", "TRAIN:", "  LR: 0.001", "  BATCH_SIZE_PER_GPU: 4", "  END_EPOCH: 2", ema].join("\n");

describe("TRAIN.EMA", () => {
  it("reads DECAY and WARMUP; any key turns it on, and the engines get the documented defaults for the rest", () => {
    const both = parseExperiment(experiment("  EMA:\n    DECAY: 0.999\n    WARMUP: 100\n"));
    expect(both.problems).toEqual([]);
    expect(both.config?.ema).toMatchObject({ decay: 0.999, warmupUpdates: 100 });
    expect(emaConfig(resolveTrainConfig(both.config!).config)).toEqual({ decay: 0.999, warmupUpdates: 100 });

    const enabled = parseExperiment(experiment("  EMA:\n    ENABLED: true\n"));
    expect(enabled.problems).toEqual([]);
    const resolved = resolveTrainConfig(enabled.config!);
    // (The file is a fragment: other keys' problems are not this test's.)
    expect(resolved.problems.filter((problem) => problem.includes("EMA"))).toEqual([]);
    expect(resolved.config.ema).toMatchObject({ decay: 0.9999, warmupUpdates: 2000 });
    expect(emaConfig(resolved.config)).toEqual({ decay: 0.9999, warmupUpdates: 2000 });

    // WARMUP: 0 is "no warm-up", not the default.
    expect(emaConfig(resolveTrainConfig(parseExperiment(experiment("  EMA:\n    WARMUP: 0\n")).config!).config)).toEqual({ decay: 0.9999, warmupUpdates: 0 });
  });

  it("is off without the section, with an empty one, and with ENABLED: false (an override turns it off)", () => {
    for (const text of [experiment(""), experiment("  EMA:\n"), experiment("  EMA:\n    DECAY: 0.99\n    ENABLED: false\n")]) {
      const parsed = parseExperiment(text);
      expect(parsed.problems).toEqual([]);
      expect(parsed.config?.ema).toBeUndefined();
      expect(emaConfig(resolveTrainConfig(parsed.config!).config)).toBeUndefined();
    }
    const overridden = parseExperiment(experiment("  EMA:\n    DECAY: 0.99\n"), { "TRAIN.EMA.ENABLED": "false" });
    expect(overridden.problems).toEqual([]);
    expect(overridden.config?.ema).toBeUndefined();
    const added = parseExperiment(experiment(""), { "TRAIN.EMA.DECAY": "0.995" });
    expect(added.problems).toEqual([]);
    expect(added.config?.ema?.decay).toBe(0.995);
  });

  it("lists every bad value at once, with the rest of the file's problems", () => {
    const { config, problems } = parseExperiment(experiment("  EMA:\n    DECAY: 1.5\n    WARMUP: -3\n    ENABLED: yes please\n    DECAYS: 0.9\n  CLIP_GRAD: many\n"));
    expect(config).toBeUndefined();
    expect(problems).toEqual(
      expect.arrayContaining([
        "TRAIN.EMA.DECAY: expected a number in (0, 1), got 1.5",
        "TRAIN.EMA.WARMUP: expected a non-negative integer, got -3",
        'TRAIN.EMA.ENABLED: expected true or false, got "yes please"',
        expect.stringMatching(/^TRAIN\.EMA\.DECAYS: unknown key \(did you mean TRAIN\.EMA\.DECAY\?\)/),
        'TRAIN.CLIP_GRAD: expected a number, got "many"',
      ]),
    );
    expect(problems).toHaveLength(5);
    for (const decay of [0, 1, -0.5]) expect(parseExperiment(experiment(`  EMA:\n    DECAY: ${decay}\n`)).problems).toEqual([`TRAIN.EMA.DECAY: expected a number in (0, 1), got ${decay}`]);
    expect(parseExperiment(experiment("  EMA: 0.999\n")).problems).toEqual([expect.stringMatching(/^TRAIN\.EMA: expected a mapping of ENABLED, DECAY, WARMUP/)]);
  });

  it("refuses an impossible decay in a TrainConfig sent over the API", () => {
    for (const decay of [1, 1.5, -0.1, Number.NaN]) {
      const config = tinyTrainConfig();
      config.ema = create(EmaSpecSchema, { decay });
      const { problems } = resolveTrainConfig(config);
      expect(problems).toEqual([`TRAIN.EMA.DECAY (ema.decay) must be in (0, 1), got ${decay}`]);
    }
  });
});
