import type { KeypointSchema } from "@poseloop/pose";
import { AppError, Code } from "@poseloop/core";
import { drawText, lineHeight, measureText } from "./bitmap-font.js";
import { fillCapsule, fillCircle, strokeRect } from "./draw-shapes.js";
import { cloneRgbImage, type Rgb, type RgbImage } from "./rgb-image.js";

/** One person to draw: keypoints as [x, y, score] per keypoint of the schema, in image pixel coordinates. */
export interface OverlayPerson {
  readonly bbox?: { readonly x: number; readonly y: number; readonly width: number; readonly height: number };
  readonly keypoints: Float32Array | readonly number[];
  readonly trackId?: number;
}

/** Colours by body side: keypoints named "left_*", "right_*", and the rest. */
export interface SideColours {
  readonly left: Rgb;
  readonly right: Rgb;
  readonly centre: Rgb;
}

export interface PoseOverlayOptions {
  /** Keypoints scoring below this are not drawn, nor limbs touching them; default 0.3. */
  minScore?: number;
  /** Joint radius in pixels; default scales with the image (≈ 0.4 % of its diagonal, at least 2). */
  jointRadius?: number;
  /** Limb thickness in pixels; default scales with the image (≈ 0.4 % of its diagonal, at least 2). */
  limbWidth?: number;
  /** Draw each person's bbox (when it has one); default true. */
  drawBoxes?: boolean;
  /** Box outline thickness in pixels; default 2. */
  boxWidth?: number;
  /** Joint and limb colours per body side; default left orange, right blue, centre green. */
  colours?: SideColours;
  /** Box colour for persons without a track id; tracked persons get a colour of their own from a palette. */
  boxColour?: Rgb;
  /** A line of text at the top left, e.g. the model version and frames per second. */
  caption?: string;
  /** Text magnification; default 1 for images under 720 px high, else 2. */
  textScale?: number;
  /** Anti-aliased joints and limbs; default true. */
  antialias?: boolean;
}

export const DEFAULT_SIDE_COLOURS: SideColours = Object.freeze({
  left: Object.freeze([255, 128, 0] as const),
  right: Object.freeze([51, 153, 255] as const),
  centre: Object.freeze([0, 255, 0] as const),
});

// Well separated hues, so neighbouring track ids are told apart at a glance.
const TRACK_PALETTE: readonly Rgb[] = [
  [230, 25, 75],
  [60, 180, 75],
  [255, 225, 25],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
  [240, 50, 230],
  [210, 245, 60],
  [250, 190, 190],
];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];

type Side = "left" | "right" | "centre";

function sideOf(name: string): Side {
  if (name.startsWith("left_")) return "left";
  if (name.startsWith("right_")) return "right";
  return "centre";
}

/** The colour of a track id's box and label. */
export function trackColour(trackId: number): Rgb {
  const index = ((Math.trunc(trackId) % TRACK_PALETTE.length) + TRACK_PALETTE.length) % TRACK_PALETTE.length;
  return TRACK_PALETTE[index]!;
}

/**
 * Draws skeletons on a copy of `image` (the original is left untouched): limbs, then joints on top, then boxes
 * with their track ids, then the caption. Keypoints below `minScore`, or not finite, are skipped.
 */
export function drawPoses(
  image: RgbImage,
  persons: readonly OverlayPerson[],
  schema: KeypointSchema,
  options: PoseOverlayOptions = {},
): RgbImage {
  const canvas = cloneRgbImage(image);
  const k = schema.names.length;
  const minScore = options.minScore ?? 0.3;
  const diagonal = Math.hypot(canvas.width, canvas.height);
  const jointRadius = options.jointRadius ?? Math.max(2, diagonal * 0.004);
  const limbRadius = (options.limbWidth ?? Math.max(2, diagonal * 0.004)) / 2;
  const colours = options.colours ?? DEFAULT_SIDE_COLOURS;
  const textScale = options.textScale ?? (canvas.height < 720 ? 1 : 2);
  const style = { antialias: options.antialias ?? true };
  const sides = schema.names.map(sideOf);
  const limbColour = (a: number, b: number): Rgb => {
    const sa = sides[a];
    return sa !== undefined && sa === sides[b] ? colours[sa] : colours.centre;
  };

  persons.forEach((person, index) => {
    if (person.keypoints.length !== 3 * k) {
      throw new AppError(
        Code.INVALID_ARGUMENT,
        `person ${index} has ${person.keypoints.length} keypoint values; schema ${schema.name} needs ${3 * k} ([x, y, score] per keypoint)`,
      );
    }
  });

  for (const person of persons) {
    const kp = person.keypoints;
    const shown = (i: number): boolean => {
      const score = kp[3 * i + 2]!;
      return score >= minScore && Number.isFinite(kp[3 * i]!) && Number.isFinite(kp[3 * i + 1]!);
    };
    for (const [a, b] of schema.skeleton) {
      if (!shown(a) || !shown(b)) continue;
      fillCapsule(canvas, kp[3 * a]!, kp[3 * a + 1]!, kp[3 * b]!, kp[3 * b + 1]!, limbRadius, limbColour(a, b), style);
    }
    for (let i = 0; i < k; i++) {
      if (!shown(i)) continue;
      fillCircle(canvas, kp[3 * i]!, kp[3 * i + 1]!, jointRadius, colours[sides[i] ?? "centre"], style);
    }
  }

  if (options.drawBoxes ?? true) {
    for (const person of persons) {
      const box = person.bbox;
      if (box === undefined || ![box.x, box.y, box.width, box.height].every(Number.isFinite)) continue;
      const colour = person.trackId === undefined ? (options.boxColour ?? WHITE) : trackColour(person.trackId);
      strokeRect(canvas, box.x, box.y, box.width, box.height, colour, options.boxWidth ?? 2);
      if (person.trackId !== undefined) {
        const label = `#${person.trackId}`;
        const height = measureText(label, textScale).height;
        // Above the box when there is room, else just inside its top edge.
        const labelY = box.y - height - 2 * textScale >= 0 ? box.y - height - 2 * textScale : box.y + 2 * textScale;
        drawText(canvas, label, box.x + textScale, labelY, colour, { scale: textScale, background: BLACK });
      }
    }
  }

  if (options.caption !== undefined && options.caption.length > 0) {
    const margin = lineHeight(textScale) / 2;
    drawText(canvas, options.caption, margin, margin, WHITE, { scale: textScale, background: BLACK, backgroundAlpha: 0.7 });
  }
  return canvas;
}
