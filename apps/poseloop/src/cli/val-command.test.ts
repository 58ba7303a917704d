import { startFakeTrainer, type FakeTrainerScript } from "@poseloop/client/testing";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import type { EvaluateRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { afterEach, describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { runCli } from "./run-cli.js";
import { cocoDataSpec, metricsTable, valTarget } from "./val-command.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function withTrainer(script: FakeTrainerScript = {}) {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  return { args: ["--trainer", server.address], requests: () => server.calls.filter((c) => c.method === "evaluate").map((c) => c.request as EvaluateRequest) };
}

describe("val arguments", () => {
  it("reads MODEL, MODEL@VERSION and --job JOB [--checkpoint ID]", () => {
    expect(valTarget("demo", undefined, undefined)).toEqual({ model: { name: "demo", version: "" } });
    expect(valTarget("demo@v3", undefined, undefined)).toEqual({ model: { name: "demo", version: "v3" } });
    expect(valTarget(undefined, "job-1", undefined)).toEqual({ checkpoint: { jobId: "job-1", checkpointId: "" } });
    expect(valTarget(undefined, "job-1", "e0002-s0000020")).toEqual({ checkpoint: { jobId: "job-1", checkpointId: "e0002-s0000020" } });
  });

  it("refuses no model, both, half a version and --checkpoint without --job", () => {
    expect(() => valTarget(undefined, undefined, undefined)).toThrow(/name the model/);
    expect(() => valTarget("demo", "job-1", undefined)).toThrow(/not both/);
    expect(() => valTarget("demo@", undefined, undefined)).toThrow(/is not MODEL or MODEL@VERSION/);
    expect(() => valTarget("demo", undefined, "e1")).toThrow(/--checkpoint goes with --job/);
  });

  it("splits a COCO annotation path into the dataset folder, its annotations and its images", () => {
    expect(cocoDataSpec("coco/annotations/person_keypoints_val2017.json", undefined, undefined)).toEqual({
      kind: DatasetKind.COCO,
      coco: { root: "coco", valAnnotations: "annotations/person_keypoints_val2017.json", valImages: "val2017" },
    });
    expect(cocoDataSpec("sets/coco/annotations/person_keypoints_val2017.json", "sets/coco/val2017/", "sets/coco/dets.json").coco).toEqual({
      root: "sets/coco",
      valAnnotations: "annotations/person_keypoints_val2017.json",
      valImages: "val2017",
      valDetections: "dets.json",
    });
    expect(() => cocoDataSpec("coco/val.json", undefined, undefined)).toThrow(/person_keypoints_<split>\.json/);
    expect(() => cocoDataSpec("coco/annotations/person_keypoints_val2017.json", "other/val2017", undefined)).toThrow(/--images must be inside the dataset's folder coco/);
  });

  it("prints the metrics as a table with results.csv's column names, '-' for COCO's -1", () => {
    const [header, row] = metricsTable({ ap: 0.51234, ap50: 0.8, ap75: 0.5, apMedium: -1, apLarge: 0.51234, ar: 0.6, ar50: 0.85, ar75: 0.55, arMedium: -1, arLarge: 0.6 } as never);
    expect(header).toMatch(/^ap +ap50 +ap75 +ap_medium +ap_large +ar +ar50 +ar75 +ar_medium +ar_large$/);
    expect(row?.split(/ +/)).toEqual(["0.5123", "0.8000", "0.5000", "-", "0.5123", "0.6000", "0.8500", "0.5500", "-", "0.6000"]);
  });
});

describe("poseloop val", () => {
  it("evaluates the serving version on the job's own set: the table on stdout, what was measured on stderr", async () => {
    const trainer = await withTrainer();
    const io = captureIo();
    expect(await runCli(["val", "demo", ...trainer.args], io)).toBe(0);
    expect(io.stdoutText().split("\n")[1]).toMatch(/^0\.5000 +0\.7500 +0\.5000 +- +0\.5000 /);
    expect(io.stderrText()).toBe("evaluated demo@v2 (int8, sha256:0) on synthetic/val: 8 images, 12 people, flip test off, 1.5 s\n");
    const [request] = trainer.requests();
    expect(request?.model).toMatchObject({ case: "version", value: { name: "demo", version: "" } });
    expect(request?.data).toBeUndefined();
    expect(request?.flipTest).toBeUndefined();
  });

  it("sends a checkpoint, a COCO set under the data root, --flip-test and --max-images; --json prints the answer", async () => {
    const trainer = await withTrainer();
    const io = captureIo();
    const argv = ["val", "--job", "job-1", "--checkpoint", "e0001-s0000010", "--data", "coco/annotations/person_keypoints_val2017.json", "--flip-test", "--max-images", "50", "--json"];
    expect(await runCli([...argv, ...trainer.args], io)).toBe(0);
    const document = JSON.parse(io.stdoutText()) as { metrics: { ap: number }; checkpoint: { checkpointId: string } };
    expect(document.metrics.ap).toBe(0.5);
    expect(document.checkpoint.checkpointId).toBe("e0001-s0000010");
    const [request] = trainer.requests();
    expect(request?.model).toMatchObject({ case: "checkpoint", value: { jobId: "job-1", checkpointId: "e0001-s0000010" } });
    expect(request?.data?.coco).toMatchObject({ root: "coco", valAnnotations: "annotations/person_keypoints_val2017.json", valImages: "val2017" });
    expect([request?.flipTest, request?.useGtBoxes, request?.maxImages]).toEqual([true, true, 50]);
  });

  it("sends a synthetic set with its sizes, and --fp32 for a version", async () => {
    const trainer = await withTrainer();
    const io = captureIo();
    expect(await runCli(["val", "demo@v1", "--synthetic", "7", "--val-images", "16", "--image-size", "128x96", "--fp32", ...trainer.args], io)).toBe(0);
    const [request] = trainer.requests();
    expect(request?.data?.kind).toBe(DatasetKind.SYNTHETIC);
    expect(request?.data?.synthetic).toMatchObject({ seed: 7n, valImages: 16, trainImages: 0, imageWidth: 128, imageHeight: 96, maxPeople: 4 });
    expect(request?.precision).toBe(1);
  });

  it("is a usage error (exit 2) without a model, or with options of the other dataset kind", async () => {
    for (const argv of [["val"], ["val", "demo", "--val-images", "5"], ["val", "demo", "--data", "a/annotations/person_keypoints_x.json", "--synthetic", "1"], ["val", "--job", "job-1", "--fp32"]]) {
      const io = captureIo();
      expect(await runCli(argv, io), argv.join(" ")).toBe(2);
      expect(io.stderrText()).toMatch(/^poseloop: /);
    }
  });
});
