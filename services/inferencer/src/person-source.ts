import { AppError, Code } from "@poseloop/core";
import { PersonSource, type DetectorOptions } from "@poseloop/proto/poseloop/inference/v1/inference_pb";

/** Where a frame's people come from, and the detector thresholds a stream or request set (absent: the manifest's). */
export interface PersonSourceSettings {
  readonly personSource: PersonSource;
  readonly scoreThreshold?: number;
  readonly iouThreshold?: number;
}

/** The client boxes, else the detector when one serves, else the whole frame; the manifest's thresholds. */
export const AUTO_PERSON_SOURCE: PersonSourceSettings = Object.freeze({ personSource: PersonSource.UNSPECIFIED });

/** The person detector an inferencer runs (POSELOOP_DETECTOR_MODEL), and whether a version of it serves now. */
export interface DetectorAvailability {
  readonly modelName: string;
  serving(): boolean;
}

/** Every problem with a person source and detector options, as INVALID_ARGUMENT lists them. */
export function personSourceProblems(source: PersonSource, detector: DetectorOptions | undefined): string[] {
  const problems: string[] = [];
  if (!Object.values(PersonSource).includes(source)) problems.push(`person_source ${source} is not a PersonSource`);
  if (detector !== undefined) {
    const { scoreThreshold, iouThreshold } = detector;
    if (!(Number.isFinite(scoreThreshold) && scoreThreshold >= 0 && scoreThreshold <= 1)) {
      problems.push(`detector.score_threshold must be a finite number in [0, 1] (0: the detector's default), got ${scoreThreshold}`);
    }
    if (!(Number.isFinite(iouThreshold) && iouThreshold >= 0 && iouThreshold <= 1)) {
      problems.push(`detector.iou_threshold must be a finite number in (0, 1] (0: the detector's default), got ${iouThreshold}`);
    }
  }
  return problems;
}

/**
 * The person source settings of a stream or request whose options passed `personSourceProblems`: NOT_FOUND when
 * they name a detector this inferencer does not run, FAILED_PRECONDITION when they ask for the detector and none
 * serves (the source that falls back, UNSPECIFIED, never fails).
 */
export function resolvePersonSource(source: PersonSource, detector: DetectorOptions | undefined, available: DetectorAvailability | undefined): PersonSourceSettings {
  const name = detector?.modelName ?? "";
  if (name !== "" && name !== available?.modelName) {
    throw new AppError(Code.NOT_FOUND, available === undefined ? `this inferencer runs no person detector, so not ${name}` : `this inferencer runs the person detector ${available.modelName}, not ${name}`);
  }
  if (source === PersonSource.DETECTOR && available?.serving() !== true) {
    throw new AppError(
      Code.FAILED_PRECONDITION,
      available === undefined
        ? "person_source DETECTOR: this inferencer runs no person detector"
        : `person_source DETECTOR: no version of the person detector ${available.modelName} is serving yet`,
    );
  }
  return {
    personSource: source,
    ...(detector !== undefined && detector.scoreThreshold > 0 ? { scoreThreshold: detector.scoreThreshold } : {}),
    ...(detector !== undefined && detector.iouThreshold > 0 ? { iouThreshold: detector.iouThreshold } : {}),
  };
}
