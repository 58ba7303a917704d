import type { KeypointStreamOptions, PersonSourceName } from "@poseloop/client";
import type { ParsedArgs } from "./command.js";
import { UsageError } from "./error-report.js";

/** The flags that pick where a stream's people come from, and the person source each stands for. */
const PERSON_SOURCE_FLAGS = {
  detector: "detector",
  "detector-model": "detector",
  boxes: "client-boxes",
  "whole-frame": "whole-frame",
} as const satisfies Record<string, PersonSourceName>;

/** Flags that only mean something next to another one, and that one. */
const NEEDS: readonly (readonly [flag: string, needs: readonly string[], what: string])[] = [
  ["track-metric", ["track"], "--track"],
  ["min-cutoff", ["smooth"], "--smooth"],
  ["beta", ["smooth"], "--smooth"],
  ["scene-cut", ["track", "smooth"], "--track or --smooth"],
  ["score-threshold", ["detector", "detector-model"], "--detector"],
  ["iou-threshold", ["detector", "detector-model"], "--detector"],
];

/**
 * The stream options of `poseloop stream`'s flags. `live`: the source is a camera or a live stream, whose
 * frames the server should drop rather than queue when it falls behind (latest frame wins).
 */
export function streamOptionsFromArgs(args: ParsedArgs, live = false): KeypointStreamOptions {
  const command = "stream";
  const sources = Object.keys(PERSON_SOURCE_FLAGS).filter((flag) => args.has(flag) && !(flag === "detector" && args.has("detector-model")));
  if (sources.length > 1) throw new UsageError(`${sources.map((flag) => `--${flag}`).join(" and ")} pick different person sources: give one`, command);
  for (const [flag, needs, what] of NEEDS) {
    if (args.has(flag) && !needs.some((other) => args.has(other))) throw new UsageError(`--${flag} applies with ${what}`, command);
  }
  const source = sources[0] as keyof typeof PERSON_SOURCE_FLAGS | undefined;
  const metric = args.string("track-metric");
  if (metric !== undefined && metric !== "iou" && metric !== "oks") throw new UsageError(`--track-metric must be iou or oks, got "${metric}"`, command);
  const minCutoff = args.number("min-cutoff", { min: 0, minExclusive: true, max: 1000 });
  const beta = args.number("beta", { min: 0, max: 1000 });
  const sceneCut = args.number("scene-cut", { min: 0, minExclusive: true, max: 1 });
  const detectorModel = args.string("detector-model");
  const scoreThreshold = args.number("score-threshold", { min: 0, max: 1 });
  const iouThreshold = args.number("iou-threshold", { min: 0, minExclusive: true, max: 1 });
  const model = args.string("model");
  const maxInFlight = args.int("max-in-flight", 1, 256);
  const minKeypointScore = args.number("min-score", { min: 0, max: 1 });
  const maxPersons = args.int("max-persons", 1);
  const name = args.string("name");
  const detector = source === "detector" || source === "detector-model";
  return {
    delivery: args.flag("latest") || live ? "latest-frame-wins" : "every-frame",
    smoothing: args.flag("smooth") ? { ...(minCutoff === undefined ? {} : { minCutoff }), ...(beta === undefined ? {} : { beta }) } : false,
    tracking: args.flag("track") ? (metric === undefined ? {} : { metric }) : false,
    flipTest: args.flag("flip-test"),
    ...(source === undefined ? {} : { personSource: PERSON_SOURCE_FLAGS[source] }),
    ...(detector && (detectorModel !== undefined || scoreThreshold !== undefined || iouThreshold !== undefined)
      ? {
          detector: {
            ...(detectorModel === undefined ? {} : { modelName: detectorModel }),
            ...(scoreThreshold === undefined ? {} : { scoreThreshold }),
            ...(iouThreshold === undefined ? {} : { iouThreshold }),
          },
        }
      : {}),
    ...(sceneCut === undefined ? {} : { sceneCutThreshold: sceneCut }),
    ...(model === undefined ? {} : { modelName: model }),
    ...(maxInFlight === undefined ? {} : { maxInFlight }),
    ...(minKeypointScore === undefined ? {} : { minKeypointScore }),
    ...(maxPersons === undefined ? {} : { maxPersons }),
    ...(name === undefined ? {} : { streamName: name }),
  };
}
