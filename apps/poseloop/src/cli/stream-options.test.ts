import { describe, expect, it } from "vitest";
import { parseCommandLine } from "./command.js";
import { streamCommand } from "./stream-command.js";
import { streamOptionsFromArgs } from "./stream-options.js";

const options = (argv: string[], live = false) => streamOptionsFromArgs(parseCommandLine(streamCommand, {}, argv), live);

describe("poseloop stream options", () => {
  it("turns tracking and smoothing flags into stream options", () => {
    expect(options(["clip.mp4"])).toMatchObject({ delivery: "every-frame", tracking: false, smoothing: false });
    expect(options(["clip.mp4", "--track", "--track-metric", "oks", "--smooth", "--min-cutoff", "0.5", "--beta", "0.1", "--scene-cut", "0.7"])).toMatchObject({
      tracking: { metric: "oks" },
      smoothing: { minCutoff: 0.5, beta: 0.1 },
      sceneCutThreshold: 0.7,
    });
    expect(options(["clip.mp4", "--track"]).tracking).toEqual({});
    expect(options(["clip.mp4", "--smooth", "--scene-cut", "1"])).toMatchObject({ smoothing: {}, tracking: false, sceneCutThreshold: 1 });
  });

  it("picks the person source and the detector's settings", () => {
    expect(options(["clip.mp4"]).personSource).toBeUndefined();
    expect(options(["clip.mp4", "--whole-frame"]).personSource).toBe("whole-frame");
    expect(options(["clip.mp4", "--boxes", "b.jsonl"]).personSource).toBe("client-boxes");
    expect(options(["clip.mp4", "--detector"])).toMatchObject({ personSource: "detector" });
    expect(options(["clip.mp4", "--detector"]).detector).toBeUndefined();
    expect(options(["clip.mp4", "--detector-model", "people", "--score-threshold", "0.4", "--iou-threshold", "0.6"])).toMatchObject({
      personSource: "detector",
      detector: { modelName: "people", scoreThreshold: 0.4, iouThreshold: 0.6 },
    });
    expect(options(["clip.mp4", "--detector", "--detector-model", "people"]).detector).toEqual({ modelName: "people" });
  });

  it("reads a live source newest frame first", () => {
    expect(options(["rtsp://cam/s"], true).delivery).toBe("latest-frame-wins");
    expect(options(["clip.mp4", "--latest"]).delivery).toBe("latest-frame-wins");
  });

  it("refuses flags that contradict or lack each other", () => {
    expect(() => options(["clip.mp4", "--detector", "--whole-frame"])).toThrow("--detector and --whole-frame pick different person sources: give one");
    expect(() => options(["clip.mp4", "--boxes", "b.jsonl", "--detector-model", "people"])).toThrow(/--detector-model and --boxes/);
    expect(() => options(["clip.mp4", "--track-metric", "oks"])).toThrow("--track-metric applies with --track");
    expect(() => options(["clip.mp4", "--min-cutoff", "1"])).toThrow("--min-cutoff applies with --smooth");
    expect(() => options(["clip.mp4", "--beta", "1"])).toThrow("--beta applies with --smooth");
    expect(() => options(["clip.mp4", "--scene-cut", "0.5"])).toThrow("--scene-cut applies with --track or --smooth");
    expect(() => options(["clip.mp4", "--score-threshold", "0.5"])).toThrow("--score-threshold applies with --detector");
    expect(() => options(["clip.mp4", "--whole-frame", "--iou-threshold", "0.5"])).toThrow("--iou-threshold applies with --detector");
  });

  it("refuses values out of range, naming the flag", () => {
    expect(() => options(["clip.mp4", "--track", "--track-metric", "giou"])).toThrow('--track-metric must be iou or oks, got "giou"');
    expect(() => options(["clip.mp4", "--smooth", "--min-cutoff", "0"])).toThrow("--min-cutoff must be greater than 0");
    expect(() => options(["clip.mp4", "--smooth", "--beta=-1"])).toThrow("--beta must be at least 0");
    expect(() => options(["clip.mp4", "--track", "--scene-cut", "1.5"])).toThrow("--scene-cut must be at most 1");
    expect(() => options(["clip.mp4", "--detector", "--score-threshold", "x"])).toThrow('--score-threshold must be a number, got "x"');
    expect(() => options(["clip.mp4", "--detector", "--iou-threshold", "0"])).toThrow("--iou-threshold must be greater than 0");
  });
});
