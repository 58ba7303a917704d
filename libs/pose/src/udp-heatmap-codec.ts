import { HeatmapCodec, type HeatmapCodecOptions } from "./heatmap-codec.js";

/**
 * The UDP heatmap codec (Huang et al. 2020, "unbiased data processing"; mmpose's UDPHeatmap, Gaussian
 * mode): input pixel centres 0 … w − 1 map onto heatmap pixel centres 0 … W − 1, so a joint at input x sits
 * at x·(W − 1)/(w − 1) on the heatmap, encoded at that exact position (the Gaussian drawn within ⌊3σ⌋ of the
 * nearest pixel) and decoded with the same scaling. Refinement defaults to UDP's DARK variant.
 *
 * Crops must use `cropAffine(region, inputSize, { udp: true })` (the codec's `udp` flag). mmpose scales the
 * decoded keypoints by w/(W − 1) instead, because its back-projection to the frame divides by w; with the
 * UDP crop affine the scaling here is the exact inverse of the encoding. The flip test mirrors without the
 * one-pixel shift, as mmpose's UDP configs do (`shift_heatmap=False`).
 */
export class UdpHeatmapCodec extends HeatmapCodec {
  constructor(options: HeatmapCodecOptions) {
    super({
      ...options,
      kind: "udp-heatmap",
      refinement: options.refinement ?? "dark",
      placement: "subpixel-window",
      udp: true,
      flipShift: false,
    });
  }
}
