import { describe, expect, it } from "vitest";
import { applyAffine, boxToCropRegion, cropAffine, cropInverseAffine, keypointsToFrame, UdpHeatmapCodec, type Affine2D, type CropRegion } from "@poseloop/pose";
import { seededRandom } from "./testing/seeded-random.js";

const INPUT = { width: 192, height: 256 };

/**
 * HRNet's get_affine_transform written the reference's way, for comparison: three point pairs (the centre,
 * a point half a width above it turned by the rotation, and a third at right angles) and the affine map
 * that sends one triple onto the other.
 */
function referenceAffine(region: CropRegion, output: { width: number; height: number }): Affine2D {
  const radians = (Math.PI * region.rotation) / 180;
  const turn = ([x, y]: [number, number]): [number, number] => [x * Math.cos(radians) - y * Math.sin(radians), x * Math.sin(radians) + y * Math.cos(radians)];
  const third = (a: [number, number], b: [number, number]): [number, number] => [b[0] - (a[1] - b[1]), b[1] + (a[0] - b[0])];
  const [sx, sy] = turn([0, region.scale[0] * -0.5]);
  const src: [number, number][] = [[region.center[0], region.center[1]], [region.center[0] + sx, region.center[1] + sy]];
  src.push(third(src[0]!, src[1]!));
  const dst: [number, number][] = [[output.width * 0.5, output.height * 0.5], [output.width * 0.5, output.height * 0.5 - output.width * 0.5]];
  dst.push(third(dst[0]!, dst[1]!));
  // Solve [a b c; d e f] · [x y 1]ᵀ = dst for the three pairs (Cramer's rule).
  const [p, q, r] = src as [[number, number], [number, number], [number, number]];
  const det = p[0] * (q[1] - r[1]) - p[1] * (q[0] - r[0]) + (q[0] * r[1] - r[0] * q[1]);
  const solve = (v: [number, number, number]): [number, number, number] => [
    (v[0] * (q[1] - r[1]) - p[1] * (v[1] - v[2]) + (v[1] * r[1] - v[2] * q[1])) / det,
    (p[0] * (v[1] - v[2]) - v[0] * (q[0] - r[0]) + (q[0] * v[2] - r[0] * v[1])) / det,
    (p[0] * (q[1] * v[2] - r[1] * v[1]) - p[1] * (q[0] * v[2] - r[0] * v[1]) + v[0] * (q[0] * r[1] - r[0] * q[1])) / det,
  ];
  return [...solve([dst[0]![0], dst[1]![0], dst[2]![0]]), ...solve([dst[0]![1], dst[1]![1], dst[2]![1]])];
}

describe("boxToCropRegion", () => {
  it("expands the short side to the input's aspect ratio, then pads by 1.25", () => {
    expect(boxToCropRegion({ x: 100, y: 50, width: 60, height: 200 }, INPUT)).toEqual({ center: [130, 150], scale: [187.5, 250], rotation: 0 });
    expect(boxToCropRegion({ x: 0, y: 0, width: 300, height: 100 }, INPUT)).toEqual({ center: [150, 50], scale: [375, 500], rotation: 0 });
    expect(boxToCropRegion({ x: 0, y: 0, width: 300, height: 100 }, INPUT, { padding: 1 }).scale).toEqual([300, 400]);
  });

  it("refuses NaN and zero-size boxes with a RangeError that names the field", () => {
    expect(() => boxToCropRegion({ x: Number.NaN, y: 0, width: 10, height: 10 }, INPUT)).toThrow(/box\.x must be a finite number/);
    expect(() => boxToCropRegion({ x: 0, y: 0, width: 0, height: 10 }, INPUT)).toThrow(/box\.width must be a positive number/);
    expect(() => boxToCropRegion({ x: 0, y: 0, width: 10, height: 10 }, { width: 0, height: 10 })).toThrow(RangeError);
  });
});

describe("cropAffine", () => {
  const region = boxToCropRegion({ x: 100, y: 50, width: 60, height: 200 }, INPUT);

  it("maps the region's centre to the input's centre and its corners to the input's corners", () => {
    const m = cropAffine(region, INPUT);
    expect(applyAffine(m, 130, 150)).toEqual([96, 128]);
    const [x0, y0] = applyAffine(m, 130 - 187.5 / 2, 150 - 125);
    const [x1, y1] = applyAffine(m, 130 + 187.5 / 2, 150 + 125);
    [x0, y0, x1, y1].forEach((v, i) => expect(v).toBeCloseTo([0, 0, 192, 256][i] as number, 9));
  });

  it("maps the region onto the pixel centres 0 … size − 1 with UDP", () => {
    const m = cropAffine(region, INPUT, { udp: true });
    expect(applyAffine(m, 130, 150)).toEqual([95.5, 127.5]);
    const [x1, y1] = applyAffine(m, 130 + 187.5 / 2, 150 + 125);
    expect(x1).toBeCloseTo(191, 9);
    expect(y1).toBeCloseTo(255, 9);
  });

  it("equals HRNet's get_affine_transform for random centres, scales and rotations", () => {
    const random = seededRandom(3);
    for (let i = 0; i < 50; i++) {
      const r: CropRegion = { center: [random() * 640, random() * 480], scale: [50 + random() * 300, 0], rotation: (random() - 0.5) * 90 };
      const withHeight = { ...r, scale: [r.scale[0], (r.scale[0] * 256) / 192] as const };
      const ours = cropAffine(withHeight, INPUT);
      const theirs = referenceAffine(withHeight, INPUT);
      ours.forEach((v, j) => expect(v).toBeCloseTo(theirs[j] as number, 8));
    }
  });

  it("turns the region clockwise for a positive rotation, the same way with and without UDP", () => {
    const turned = { ...region, rotation: 90 };
    // A point above the centre in the frame lands left of the centre in the crop.
    const [x, y] = applyAffine(cropAffine(turned, INPUT), 130, 100);
    expect(x).toBeCloseTo(96 - 50 * (192 / 187.5), 9);
    expect(y).toBeCloseTo(128, 9);
    const [ux, uy] = applyAffine(cropAffine(turned, INPUT, { udp: true }), 130, 100);
    expect(ux).toBeLessThan(95.5);
    expect(uy).toBeCloseTo(127.5, 9);
  });

  it("has an inverse that takes model-input pixels back to the frame", () => {
    for (const udp of [false, true]) {
      const turned = { ...region, rotation: 17 };
      const m = cropAffine(turned, INPUT, { udp });
      const back = cropInverseAffine(turned, INPUT, { udp });
      const [x, y] = applyAffine(m, 141.5, 77.25);
      const [fx, fy] = applyAffine(back, x, y);
      expect(fx).toBeCloseTo(141.5, 9);
      expect(fy).toBeCloseTo(77.25, 9);
    }
  });

  it("refuses a region with a NaN centre or a zero scale", () => {
    expect(() => cropAffine({ ...region, center: [Number.NaN, 1] }, INPUT)).toThrow(RangeError);
    expect(() => cropAffine({ ...region, scale: [0, 1] }, INPUT)).toThrow(RangeError);
  });
});

describe("top-down round trip", () => {
  it("takes frame keypoints through the UDP crop, the codec and back to the frame within a fraction of a pixel", () => {
    const codec = new UdpHeatmapCodec({ inputSize: INPUT, heatmapSize: { width: 48, height: 64 }, numKeypoints: 3, sigma: 2 });
    const region = { ...boxToCropRegion({ x: 300, y: 120, width: 90, height: 240 }, INPUT), rotation: 12 };
    const frame = [330, 200, 360, 260, 345, 330];
    const toCrop = cropAffine(region, INPUT, { udp: codec.udp });
    const inCrop = frame.flatMap((_, i) => (i % 2 === 0 ? applyAffine(toCrop, frame[i] as number, frame[i + 1] as number) : []));
    const decoded = codec.decode(codec.encode(inCrop).targets);
    const back = keypointsToFrame(decoded.keypoints, region, INPUT, { udp: codec.udp });
    // Crop pixels are ~1.7 frame pixels here; the codec is good to ~0.01 crop pixels.
    back.forEach((v, i) => expect(Math.abs(v - (frame[i] as number))).toBeLessThan(0.1));
  });
});
