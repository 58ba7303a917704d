import { assertRgbImage, type RgbImage } from "./rgb-image.js";

/** Levels per channel of a colour histogram: 4 × 4 × 4 = 64 bins. */
const LEVELS = 4;
/** About this many pixels are sampled, whatever the picture's size: a frame's histogram costs the same at 4K. */
const SAMPLES = 16_384;

/**
 * The joint RGB histogram of a picture, 4 levels per channel, normalized to sum 1, from an even grid of about
 * 16k pixels. Coarse on purpose: people walking, noise and compression barely move it, a cut to another shot
 * (another background, other lighting) moves most of its mass.
 */
export function colourHistogram(image: RgbImage): Float32Array {
  assertRgbImage(image);
  const { width, height, data } = image;
  const step = Math.max(1, Math.floor(Math.sqrt((width * height) / SAMPLES)));
  const counts = new Float64Array(LEVELS * LEVELS * LEVELS);
  let total = 0;
  const shift = 8 - Math.log2(LEVELS);
  for (let y = step >> 1; y < height; y += step) {
    for (let x = step >> 1, p = (y * width + x) * 3; x < width; x += step, p += 3 * step) {
      const bin = (((data[p] as number) >> shift) * LEVELS + ((data[p + 1] as number) >> shift)) * LEVELS + ((data[p + 2] as number) >> shift);
      counts[bin] = (counts[bin] as number) + 1;
      total++;
    }
  }
  return Float32Array.from(counts, (count) => count / total);
}

/**
 * How different two normalized histograms are: their total variation distance, half the L1 distance, from 0
 * (the same colours) to 1 (no colour in common).
 */
export function histogramDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`histograms of ${a.length} and ${b.length} bins cannot be compared`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs((a[i] as number) - (b[i] as number));
  return Math.min(1, sum / 2);
}
