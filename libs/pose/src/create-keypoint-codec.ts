import type { HeatmapCodecOptions } from "./heatmap-codec.js";
import type { KeypointCodec } from "./keypoint-codec.js";
import { MsraHeatmapCodec } from "./msra-heatmap-codec.js";
import { SimccCodec, type SimccCodecOptions } from "./simcc-codec.js";
import { UdpHeatmapCodec } from "./udp-heatmap-codec.js";

/**
 * A codec described the way a model manifest describes it (the proto's Codec oneof): a heatmap codec with
 * `unbiased` selecting UDP, or a SimCC codec.
 */
export type KeypointCodecSpec =
  | (HeatmapCodecOptions & { readonly kind: "heatmap"; readonly unbiased?: boolean })
  | (SimccCodecOptions & { readonly kind: "simcc" });

/** The codec a spec describes; throws a RangeError for invalid sizes, sigmas or ratios. */
export function createKeypointCodec(spec: KeypointCodecSpec): KeypointCodec {
  switch (spec.kind) {
    case "heatmap":
      return spec.unbiased === true ? new UdpHeatmapCodec(spec) : new MsraHeatmapCodec(spec);
    case "simcc":
      return new SimccCodec(spec);
    default:
      throw new TypeError(`unknown codec kind ${String((spec as { kind: unknown }).kind)}`);
  }
}
