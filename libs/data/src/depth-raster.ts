import type { Rgb, RgbImage } from "@poseloop/vision";
import { invert, type Mat3, type Vec3 } from "./rotation-3d.js";

/** Depth where the line of sight through (u, v) enters the sphere of squared radius r2 around `centre`. */
function sphereFront(u: number, v: number, centre: Vec3, r2: number): number {
  const du = u - centre[0];
  const dv = v - centre[1];
  const h = r2 - du * du - dv * dv;
  return h < 0 ? Infinity : centre[2] - Math.sqrt(h);
}

/**
 * A z-buffered ray caster for the synthetic scenes: solids are intersected exactly along each pixel's line of
 * sight, so overlaps between limbs, torso and other people resolve by depth, and the owner buffer records who
 * is visible where (the source of visibility flags, boxes and areas).
 *
 * Coordinates (u, v, w): u, v in pixels with pixel (i, j) covering [i, i+1) × [j, j+1) and sampled at its
 * centre; w is depth, growing away from the camera (orthographic projection along w).
 */
export class DepthRaster {
  readonly image: RgbImage;
  /** Depth of the nearest surface per pixel; +Infinity where only the background is. */
  readonly depth: Float64Array;
  /** Who owns each pixel: 0 for the background, else the id passed when drawing. */
  readonly owner: Uint16Array;

  constructor(image: RgbImage) {
    this.image = image;
    this.depth = new Float64Array(image.width * image.height).fill(Infinity);
    this.owner = new Uint16Array(image.width * image.height);
  }

  private bounds(minU: number, maxU: number, minV: number, maxV: number): [number, number, number, number] | undefined {
    const i0 = Math.max(0, Math.floor(minU - 0.5));
    const i1 = Math.min(this.image.width - 1, Math.ceil(maxU - 0.5));
    const j0 = Math.max(0, Math.floor(minV - 0.5));
    const j1 = Math.min(this.image.height - 1, Math.ceil(maxV - 0.5));
    return i0 > i1 || j0 > j1 ? undefined : [i0, i1, j0, j1];
  }

  private plot(p: number, w: number, facing: number, colour: Rgb, owner: number): void {
    if (!(w < this.depth[p]!)) return;
    this.depth[p] = w;
    this.owner[p] = owner;
    // Light from the camera: surfaces turned away darken, which gives the shapes their roundness.
    const light = 0.45 + 0.55 * Math.min(1, Math.max(0, facing));
    const data = this.image.data;
    data[3 * p] = Math.min(255, Math.round(colour[0] * light));
    data[3 * p + 1] = Math.min(255, Math.round(colour[1] * light));
    data[3 * p + 2] = Math.min(255, Math.round(colour[2] * light));
  }

  /** Every point within `radius` of the segment a–b. */
  capsule(a: Vec3, b: Vec3, radius: number, colour: Rgb, owner: number): void {
    const box = this.bounds(Math.min(a[0], b[0]) - radius, Math.max(a[0], b[0]) + radius, Math.min(a[1], b[1]) - radius, Math.max(a[1], b[1]) + radius);
    if (box === undefined || !(radius > 0)) return;
    const [i0, i1, j0, j1] = box;
    const bu = b[0] - a[0];
    const bv = b[1] - a[1];
    const bw = b[2] - a[2];
    const baba = bu * bu + bv * bv + bw * bw;
    const flat = bu * bu + bv * bv;
    const r2 = radius * radius;
    const a2 = baba - bw * bw;
    const width = this.image.width;
    for (let j = j0; j <= j1; j++) {
      const v = j + 0.5;
      for (let i = i0; i <= i1; i++) {
        const u = i + 0.5;
        const du = u - a[0];
        const dv = v - a[1];
        // Quick reject on the projected distance to the segment.
        const t2 = flat > 0 ? Math.min(1, Math.max(0, (du * bu + dv * bv) / flat)) : 0;
        const eu = du - t2 * bu;
        const ev = dv - t2 * bv;
        if (eu * eu + ev * ev > r2) continue;
        let best = Infinity;
        let facing = 0;
        // The cylinder's side (inigo quilez's capsule intersection, for a ray along +w).
        const ow = -a[2];
        const baoa = bu * du + bv * dv + bw * ow;
        if (a2 > 1e-9 * baba) {
          const bq = baba * ow - baoa * bw;
          const cq = baba * (du * du + dv * dv + ow * ow) - baoa * baoa - r2 * baba;
          const h = bq * bq - a2 * cq;
          if (h >= 0) {
            const t = (-bq - Math.sqrt(h)) / a2;
            const y = baoa + t * bw;
            if (y > 0 && y < baba) {
              best = t;
              facing = (a[2] + (bw * y) / baba - t) / radius;
            }
          }
        }
        // The two spherical caps.
        const atA = sphereFront(u, v, a, r2);
        if (atA < best) {
          best = atA;
          facing = (a[2] - atA) / radius;
        }
        const atB = sphereFront(u, v, b, r2);
        if (atB < best) {
          best = atB;
          facing = (b[2] - atB) / radius;
        }
        if (best < Infinity) this.plot(j * width + i, best, facing, colour, owner);
      }
    }
  }

  /** The ellipsoid centre + axes·x, |x| ≤ 1 (the columns of `axes` are its semi-axis vectors). */
  ellipsoid(centre: Vec3, axes: Mat3, colour: Rgb, owner: number): void {
    const halfU = Math.hypot(axes[0], axes[1], axes[2]);
    const halfV = Math.hypot(axes[3], axes[4], axes[5]);
    const box = this.bounds(centre[0] - halfU, centre[0] + halfU, centre[1] - halfV, centre[1] + halfV);
    if (box === undefined) return;
    const [i0, i1, j0, j1] = box;
    const m = invert(axes);
    if (!m.every(Number.isFinite)) return;
    // x(w) = g + w·h, with g from the pixel and h the image of the w axis.
    const hx = m[2];
    const hy = m[5];
    const hz = m[8];
    const hh = hx * hx + hy * hy + hz * hz;
    const width = this.image.width;
    for (let j = j0; j <= j1; j++) {
      const dv = j + 0.5 - centre[1];
      for (let i = i0; i <= i1; i++) {
        const du = i + 0.5 - centre[0];
        const dw = -centre[2];
        const gx = m[0] * du + m[1] * dv + m[2] * dw;
        const gy = m[3] * du + m[4] * dv + m[5] * dw;
        const gz = m[6] * du + m[7] * dv + m[8] * dw;
        const gh = gx * hx + gy * hy + gz * hz;
        const disc = gh * gh - hh * (gx * gx + gy * gy + gz * gz - 1);
        if (disc < 0) continue;
        const root = Math.sqrt(disc);
        this.plot(j * width + i, (-gh - root) / hh, root / Math.sqrt(hh), colour, owner);
      }
    }
  }

  /** The convex solid where normal·p ≤ offset for every plane; `corners` must enclose it. */
  solid(planes: readonly { normal: Vec3; offset: number }[], corners: readonly Vec3[], colour: Rgb, owner: number): void {
    const us = corners.map((c) => c[0]);
    const vs = corners.map((c) => c[1]);
    const box = this.bounds(Math.min(...us), Math.max(...us), Math.min(...vs), Math.max(...vs));
    if (box === undefined) return;
    const [i0, i1, j0, j1] = box;
    const n = planes.length;
    const nu = Float64Array.from(planes, (p) => p.normal[0]);
    const nv = Float64Array.from(planes, (p) => p.normal[1]);
    const nw = Float64Array.from(planes, (p) => p.normal[2]);
    const k = Float64Array.from(planes, (p) => p.offset);
    const facingOf = Float64Array.from(planes, (p) => -p.normal[2] / Math.hypot(...p.normal));
    const width = this.image.width;
    for (let j = j0; j <= j1; j++) {
      const v = j + 0.5;
      for (let i = i0; i <= i1; i++) {
        const u = i + 0.5;
        let enter = -Infinity;
        let exit = Infinity;
        let facing = 0;
        let inside = true;
        for (let q = 0; q < n; q++) {
          const rest = k[q]! - nu[q]! * u - nv[q]! * v;
          const slope = nw[q]!;
          if (slope > 1e-12) exit = Math.min(exit, rest / slope);
          else if (slope < -1e-12) {
            const t = rest / slope;
            if (t > enter) {
              enter = t;
              facing = facingOf[q]!;
            }
          } else if (rest < 0) {
            inside = false;
            break;
          }
        }
        if (inside && enter <= exit && enter > -Infinity) this.plot(j * width + i, enter, facing, colour, owner);
      }
    }
  }
}
