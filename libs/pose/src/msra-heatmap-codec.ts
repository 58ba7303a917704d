import { HeatmapCodec, type HeatmapCodecOptions } from "./heatmap-codec.js";

export interface MsraHeatmapCodecOptions extends HeatmapCodecOptions {
  /**
   * Put each Gaussian at its exact sub-pixel position over the whole plane (DarkPose's unbiased encoding,
   * mmpose's `unbiased=True`) instead of at the nearest heatmap pixel. Default: true with DARK refinement,
   * false otherwise.
   */
  readonly subpixelTargets?: boolean;
}

/**
 * The MSRA heatmap codec (SimpleBaseline, HRNet; mmpose's MSRAHeatmap): heatmap pixel i covers input
 * coordinate i × (input / heatmap). Refinement defaults to the quarter-pixel shift; "dark" gives DarkPose.
 *
 * With the default rounded targets a joint is stored to the nearest heatmap pixel, so a round trip is exact
 * only to half a heatmap pixel (2 input pixels at stride 4); sub-pixel targets with DARK recover a joint to a
 * few hundredths of a pixel.
 */
export class MsraHeatmapCodec extends HeatmapCodec {
  constructor(options: MsraHeatmapCodecOptions) {
    const refinement = options.refinement ?? "quarter-offset";
    super({
      ...options,
      kind: "msra-heatmap",
      refinement,
      placement: (options.subpixelTargets ?? refinement === "dark") ? "subpixel" : "rounded",
      udp: false,
      flipShift: true,
    });
  }
}
