import { create } from "@bufbuild/protobuf";
import { DetectorHead, ModelKind, ModelManifestSchema, Precision, ResizeMode } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { Architecture } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { modelConfigProblems } from "@poseloop/train";
import { describe, expect, it } from "vitest";
import { parseExperiment } from "./experiment.js";
import { resolveTrainConfig } from "./validate.js";
import { modelConfigFromSpec } from "./model-config.js";
import { runContract, servingManifest } from "./model-contract.js";

const DETECTOR = [
  "NAME: detector-test",
  "DATASET:",
  "  DATASET: synthetic",
  "  FLIP: true",
  "  SCALE_FACTOR: 0.2",
  "  SYNTHETIC:",
  "    TRAIN_IMAGES: 16",
  "    VAL_IMAGES: 8",
  "    IMAGE_SIZE: [128, 96]",
  "    MAX_PEOPLE: 4",
  "MODEL:",
  "  NAME: detector_lite",
  "  IMAGE_SIZE: [128, 96]",
  "  EXTRA:",
  "    CHANNELS: [8, 16, 32]",
  "    HEAD_CHANNELS: 16",
  "TRAIN:",
  "  BATCH_SIZE_PER_GPU: 4",
  "  END_EPOCH: 1",
  "  LR: 0.002",
  "  OPTIMIZER: adam",
  "PUBLISH:",
  "  MODEL_NAME: person-detector",
  "",
].join("\n");

describe("experiment files for the person detector", () => {
  it("parse MODEL.NAME detector_lite into the zoo's detector with no keypoint schema or codec", () => {
    const parsed = parseExperiment(DETECTOR);
    expect(parsed.problems).toEqual([]);
    const { config, problems } = resolveTrainConfig(parsed.config!);
    expect(problems).toEqual([]);
    const model = config.model!;
    expect(model.architecture).toBe(Architecture.DETECTOR_LITE);
    expect(model.keypointSchema).toBeUndefined();
    expect(model.codec).toBeUndefined();
    expect(model.extra.case === "detectorLite" && [...model.extra.value.channels]).toEqual([8, 16, 32]);
    const zoo = modelConfigFromSpec(model);
    expect(zoo.architecture).toBe("detector-lite");
    expect(zoo.detector).toMatchObject({ channels: [8, 16, 32], blocksPerStage: 1, numClasses: 1, headChannels: 16 });
    expect(modelConfigProblems(zoo)).toEqual([]);
  });

  it("lists every pose-only key given to a detector, all at once", () => {
    const yaml = DETECTOR.replace("  IMAGE_SIZE: [128, 96]\n  EXTRA:", "  IMAGE_SIZE: [128, 96]\n  HEATMAP_SIZE: [32, 24]\n  SIGMA: 2\n  EXTRA:")
      .concat("TEST:\n  FLIP_TEST: true\n  USE_GT_BBOX: true\nDISTILL:\n  TEACHER_MODEL: demo\n  WEIGHT: 1\n");
    const { problems } = parseExperiment(yaml);
    for (const key of ["MODEL.HEATMAP_SIZE", "MODEL.SIGMA", "TEST.FLIP_TEST", "TEST.USE_GT_BBOX", "DISTILL"]) {
      expect(problems.some((problem) => problem.startsWith(`${key}:`) && problem.includes("detector"))).toBe(true);
    }
  });

  it("refuses widths the detector cannot take and keys of other architectures", () => {
    const parsed = parseExperiment(DETECTOR.replace("CHANNELS: [8, 16, 32]", "CHANNELS: [8, 16]"));
    expect(resolveTrainConfig(parsed.config!).problems.some((problem) => problem.includes("model.detector_lite.channels"))).toBe(true);
    const other = parseExperiment(DETECTOR.replace("CHANNELS: [8, 16, 32]", "NUM_LAYERS: 50"));
    expect(other.problems).toContain("MODEL.EXTRA.NUM_LAYERS: only for MODEL.NAME pose_resnet");
  });
});

describe("a detector config's contract", () => {
  const resolved = () => {
    const parsed = parseExperiment(DETECTOR);
    expect(parsed.problems).toEqual([]);
    // Normalization other than ImageNet's (a config message's model.mean; experiment files keep ImageNet's).
    parsed.config!.model!.mean = [120, 110, 100];
    return resolveTrainConfig(parsed.config!);
  };

  it("is published as kind DETECTOR with the zoo's DetectorSpec under the config's input and normalization", () => {
    const { config, problems } = resolved();
    expect(problems).toEqual([]);
    const manifest = create(ModelManifestSchema, servingManifest(config, Precision.INT8));
    expect(manifest.kind).toBe(ModelKind.DETECTOR);
    expect(manifest.precision).toBe(Precision.INT8);
    expect(manifest.codec).toBeUndefined();
    expect(manifest.keypointSchema).toBeUndefined();
    expect(manifest.input).toMatchObject({ name: "input", width: 128, height: 96 });
    expect([...(manifest.input?.mean ?? [])]).toEqual([120, 110, 100]);
    expect(manifest.detector).toMatchObject({ head: DetectorHead.CENTERNET, numClasses: 1, personClass: 0, strides: [4], resize: ResizeMode.LETTERBOX, padValue: 0, maxDetections: 100 });
    expect(manifest.outputNames).toEqual(["centers", "sizes", "offsets"]);
    const contract = runContract(config);
    expect(contract.kind === "detector" && [contract.inputWidth, contract.inputHeight, contract.detector.head]).toEqual([128, 96, DetectorHead.CENTERNET]);
  });

  it("on a COCO split needs no person boxes to validate with: it finds the people itself", () => {
    const coco = DETECTOR.replace(/ {2}DATASET: synthetic\n[\s\S]*?MODEL:/, "  DATASET: coco\n  ROOT: coco\n  TRAIN_SET: train2017\n  TEST_SET: val2017\nMODEL:");
    const parsed = parseExperiment(coco);
    expect(parsed.problems).toEqual([]);
    expect(resolveTrainConfig(parsed.config!).problems).toEqual([]);
  });

  it("trains on either engine, and is refused at submission with MODEL.PRETRAINED (no PyTorch weights to import)", () => {
    const parsed = parseExperiment(DETECTOR.replace("  OPTIMIZER: adam\n", "  OPTIMIZER: adam\n  ENGINE: pytorch\n"));
    expect(parsed.problems).toEqual([]);
    expect(resolveTrainConfig(parsed.config!).problems).toEqual([]);
    // A config message (no experiment file) may name a state_dict; the file parser refuses the key for a detector.
    parsed.config!.model!.pretrained = "backbone.pth";
    const { problems } = resolveTrainConfig(parsed.config!);
    expect(problems.filter((problem) => problem.startsWith("MODEL.PRETRAINED") && problem.includes("detector"))).toHaveLength(1);
  });
});
