import type { Command } from "./command.js";

/** `poseloop detect`; its work (image codecs) is loaded when it runs, as for stream. */
export const detectCommand: Command = {
  name: "detect",
  summary: "Find the keypoints of the people in one image.",
  synopsis: "<image> [--box X,Y,W,H ...] [--out annotated.png] [--json]",
  description: [
    "Sends a JPEG, PNG or WebP file as it is and prints each person's box, score and keypoints. Without --box",
    "the whole image is one person; with it, each box (from a person detector) is one. Keypoints are named, and",
    "--out draws their skeleton, as the serving model's manifest declares them (GetServingModel); where the",
    "inferencer does not say, as their count implies (17: COCO, 33: BlazePose, 133: COCO-WholeBody).",
    "The examples' out/person.jpg is a sample picture of one synthetic person (192x256, its box 49,36 72x160):",
    "`npm run sample-image` makes it in a checkout of PoseLoop.",
  ].join("\n"),
  examples: [
    "poseloop detect out/person.jpg",
    "poseloop detect out/person.jpg --box 49,36,72,160 --out out/person-annotated.png",
    "poseloop detect out/person.jpg --json | jq '.persons[0].keypoints[0]'",
  ],
  positionals: { min: 1, max: 1 },
  options: {
    box: { type: "string", multiple: true, value: "X,Y,W,H", help: "a person's box in pixels (repeat for more people)" },
    out: { type: "string", value: "FILE", help: "write the image with skeletons drawn (.png, .jpg)" },
    model: { type: "string", value: "NAME", help: "model to serve from (default: the inferencer's)" },
    "min-score": { type: "string", value: "X", help: "keypoints below this score are left out of the instance score and the drawing (0-1)" },
    "max-persons": { type: "string", value: "N", help: "at most N people" },
    "flip-test": { type: "boolean", help: "average with the mirrored crop" },
  },
  async run(ctx) {
    const { runDetect } = await import("./detect-run.js");
    return runDetect(ctx);
  },
};
