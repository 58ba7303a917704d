import type { Box } from "@poseloop/pose";

/** One frame as the inference worker receives it (plain data, transferred between threads). */
export type FrameImage =
  | { readonly kind: "encoded"; readonly data: Uint8Array }
  | { readonly kind: "raw"; readonly width: number; readonly height: number; readonly format: "RGB8" | "BGR8" | "RGBA8" | "GRAY8"; readonly stride: number; readonly data: Uint8Array };

export interface FrameJob {
  readonly image: FrameImage;
  /** People to estimate; none: the whole frame. */
  readonly boxes: readonly Box[];
  readonly flipTest: boolean;
  readonly minKeypointScore: number;
  /** 0: no limit. */
  readonly maxPersons: number;
  /** Also measure the frame's colour histogram (a stream's scene-cut test compares consecutive frames'). */
  readonly histogram?: boolean;
}

export interface PersonEstimate {
  readonly bbox: Box;
  readonly score: number;
  /** [x, y, score] per keypoint, frame pixels. */
  readonly keypoints: Float32Array;
}

/** Microseconds per stage, measured in the worker. */
export interface StageTimings {
  readonly decodeUs: number;
  readonly preprocessUs: number;
  readonly inferenceUs: number;
  readonly postprocessUs: number;
}

export type FrameOutcome =
  | {
      readonly ok: true;
      readonly width: number;
      readonly height: number;
      readonly persons: readonly PersonEstimate[];
      readonly timings: StageTimings;
      /** The decoded frame's `colourHistogram`, when the job asked for it. */
      readonly histogram?: Float32Array;
    }
  | { readonly ok: false; readonly code: number; readonly message: string; readonly timings: StageTimings };
