import { AppError, type SeededRandom } from "@poseloop/core";
import { createRgbImage, type Rgb, type RgbImage } from "@poseloop/vision";
import { DepthRaster } from "./depth-raster.js";
import { poseHumanoid, PoseKind, sampleBodyShape, samplePose, type BodyPart, type Material, type PosedHumanoid } from "./humanoid-model.js";
import { invert, multiply, rotationX, rotationY, transform, transpose, type Mat3, type Vec3 } from "./rotation-3d.js";
import { paintBackground, randomColour } from "./synthetic-background.js";

export interface SyntheticSceneOptions {
  readonly width: number;
  readonly height: number;
  /** Fewest people per image; default 1. */
  readonly minPeople?: number;
  /** Most people per image; default 3. */
  readonly maxPeople?: number;
  /** Probability that an object is placed over a person, hiding some joints; default 0.3. */
  readonly occlusion?: number;
  /** Probability that the picture is blurred; default 0.3. */
  readonly blur?: number;
  /** Largest standard deviation of the pixel noise, 0–255 scale (each image draws its own up to it); default 8. */
  readonly noise?: number;
  /** The postures to draw from, uniformly; default all of PoseKind. */
  readonly poseKinds?: readonly PoseKind[];
  /**
   * People's heights as fractions of the picture's, [smallest, largest]. Default: 0.5–0.95 for a lone person,
   * 0.3–0.8 among several (what the pose datasets were made with).
   */
  readonly personHeight?: readonly [number, number];
  /**
   * Probability that a person after the first stands beside an earlier one, overlapping it (a crowd, for
   * detectors); default 0. At 0 no random draw is spent on it, so the pose datasets stay as they were.
   */
  readonly crowd?: number;
  /**
   * Of the crowd's people, the share standing behind the earlier one rather than beside it: farther from the
   * camera (feet 15–50% of the other's height higher up, 0.5–0.95 of their size), anywhere across them, so the
   * nearer person hides part of the farther one, as when walkers at different depths cross. Default 0 (at 0 no
   * random draw is spent on it, so datasets made without it stay as they were).
   */
  readonly crowdDepth?: number;
  /**
   * How often a person is cut by the picture's border (bottom, top or a side, in the default's 10 : 5 : 12
   * proportion); default 0.27, the pose datasets' mix. Past 0.27 it scales all three up.
   */
  readonly edgeCut?: number;
}

/** One rendered person, annotated the COCO way. */
export interface SyntheticPerson {
  /**
   * [x, y, v] per COCO-17 keypoint, coordinates rounded to 1/100 pixel with pixel (i, j) covering
   * [i, i+1) × [j, j+1). v = 2: in the picture and seen; 1: in the picture but hidden (behind the body itself,
   * another person or an object); 0: outside the picture, with x = y = 0.
   */
  readonly keypoints: number[];
  readonly numKeypoints: number;
  /** The tight box of the person's visible pixels, [x, y, width, height] (pycocotools' box of a mask). */
  readonly bbox: [number, number, number, number];
  /** The number of visible pixels of the person (COCO's area is its segmentation mask's). */
  readonly area: number;
  readonly poseKind: PoseKind;
  /** Which way the person faces, degrees: 0 towards the camera, ±90 sideways, 180 away. */
  readonly yaw: number;
}

export interface SyntheticScene {
  readonly image: RgbImage;
  /** The people with at least one visible pixel, back to front. */
  readonly people: SyntheticPerson[];
}

/** Owner id of occluding objects in the depth raster. */
const OCCLUDER = 0xffff;
const DEG = Math.PI / 180;

const SKIN_TONES: readonly Rgb[] = [
  [255, 224, 196],
  [241, 194, 160],
  [224, 172, 125],
  [198, 134, 86],
  [160, 104, 62],
  [120, 75, 45],
  [85, 55, 35],
];
const HAIR_COLOURS: readonly Rgb[] = [
  [20, 16, 14],
  [60, 40, 25],
  [110, 75, 40],
  [200, 165, 100],
  [150, 60, 30],
  [170, 170, 165],
];

type Palette = Record<Material, Rgb>;

function samplePalette(random: SeededRandom): Palette {
  const jitter = (c: Rgb, amount: number): Rgb => c.map((x) => Math.max(0, Math.min(255, Math.round(x + random.uniform(-amount, amount))))) as unknown as Rgb;
  const skin = jitter(random.pick(SKIN_TONES), 12);
  const shirt = randomColour(random, [0.1, 1], [0.2, 1]);
  const trousers = random.chance(0.4) ? jitter([45, 60, 95], 20) : randomColour(random, [0, 0.8], [0.1, 0.8]);
  return {
    skin,
    shirt,
    sleeve: random.chance(0.8) ? shirt : randomColour(random, [0.1, 1], [0.2, 1]),
    trousers,
    shin: skin,
    shoe: random.chance(0.5) ? jitter([30, 30, 30], 20) : randomColour(random, [0, 0.6], [0.2, 1]),
    hair: jitter(random.pick(HAIR_COLOURS), 10),
    eye: [35, 25, 25],
    nose: [Math.round(skin[0] * 0.85), Math.round(skin[1] * 0.8), Math.round(skin[2] * 0.8)],
  };
}

/** A person's placement: image = linear·body + offset, with the linear part a scaled rotation (and mirror). */
export interface Placement {
  readonly linear: Mat3;
  readonly offset: Vec3;
  readonly scale: number;
}

export const place = (placement: Placement, p: Vec3): Vec3 => {
  const q = transform(placement.linear, p);
  return [q[0] + placement.offset[0], q[1] + placement.offset[1], q[2] + placement.offset[2]];
};

/** Rasterizes one body part of a placed person; the raster records `owner` where the part is in front. */
export function drawPart(raster: DepthRaster, part: BodyPart, placement: Placement, colour: Rgb, owner: number): void {
  switch (part.kind) {
    case "capsule":
      // At least 0.8 px, so even a small person's wrist covers the pixel its keypoint falls in.
      raster.capsule(place(placement, part.a), place(placement, part.b), Math.max(0.8, part.radius * placement.scale), colour, owner);
      break;
    case "ellipsoid":
      raster.ellipsoid(place(placement, part.centre), multiply(placement.linear, part.axes), colour, owner);
      break;
    case "solid": {
      const normals = transpose(invert(placement.linear));
      const planes = part.planes.map(({ normal, offset }) => {
        const n = transform(normals, normal);
        return { normal: n, offset: offset + n[0] * placement.offset[0] + n[1] * placement.offset[1] + n[2] * placement.offset[2] };
      });
      raster.solid(planes, part.corners.map((corner) => place(placement, corner)), colour, owner);
      break;
    }
  }
}

/** Problems with scene options (empty when valid). */
export function sceneOptionProblems(options: SyntheticSceneOptions): string[] {
  const problems: string[] = [];
  const { width, height } = options;
  if (!Number.isInteger(width) || width < 16 || width > 8192) problems.push(`width must be an integer from 16 to 8192, got ${width}`);
  if (!Number.isInteger(height) || height < 16 || height > 8192) problems.push(`height must be an integer from 16 to 8192, got ${height}`);
  const minPeople = options.minPeople ?? 1;
  const maxPeople = options.maxPeople ?? 3;
  if (!Number.isInteger(minPeople) || minPeople < 1) problems.push(`minPeople must be a positive integer, got ${minPeople}`);
  if (!Number.isInteger(maxPeople) || maxPeople < minPeople || maxPeople > 32) {
    problems.push(`maxPeople must be an integer from minPeople (${minPeople}) to 32, got ${maxPeople}`);
  }
  for (const [name, value] of [
    ["occlusion", options.occlusion],
    ["blur", options.blur],
  ] as const) {
    if (value !== undefined && !(value >= 0 && value <= 1)) problems.push(`${name} is a probability from 0 to 1, got ${value}`);
  }
  if (options.noise !== undefined && !(options.noise >= 0 && options.noise <= 64)) problems.push(`noise must be from 0 to 64, got ${options.noise}`);
  if (options.crowd !== undefined && !(options.crowd >= 0 && options.crowd <= 1)) problems.push(`crowd is a probability from 0 to 1, got ${options.crowd}`);
  if (options.crowdDepth !== undefined && !(options.crowdDepth >= 0 && options.crowdDepth <= 1)) problems.push(`crowdDepth is a probability from 0 to 1, got ${options.crowdDepth}`);
  if (options.edgeCut !== undefined && !(options.edgeCut >= 0 && options.edgeCut <= 1)) problems.push(`edgeCut is a probability from 0 to 1, got ${options.edgeCut}`);
  if (options.personHeight !== undefined) {
    const [low, high] = options.personHeight;
    if (!(low > 0 && high >= low && high <= 2)) problems.push(`personHeight must be [smallest, largest] fractions with 0 < smallest <= largest <= 2, got [${low}, ${high}]`);
  }
  const kinds = new Set<string>(Object.values(PoseKind));
  if (options.poseKinds !== undefined) {
    if (options.poseKinds.length === 0) problems.push("poseKinds must name at least one pose kind");
    for (const kind of options.poseKinds) if (!kinds.has(kind)) problems.push(`unknown pose kind "${String(kind)}" (known: ${[...kinds].join(", ")})`);
  }
  return problems;
}

/**
 * Renders one picture of 1–maxPeople humanoids over a random background, with occluders, blur and noise, and
 * annotates every person the COCO way. Everything comes from `random`: the same generator state gives the
 * same pixels and annotations.
 */
export function renderSyntheticScene(random: SeededRandom, options: SyntheticSceneOptions): SyntheticScene {
  const problems = sceneOptionProblems(options);
  if (problems.length > 0) throw AppError.invalid("synthetic scene options", problems);
  const { width, height } = options;
  const image = createRgbImage(width, height);
  paintBackground(image, random);
  const raster = new DepthRaster(image);

  const count = random.int(options.minPeople ?? 1, options.maxPeople ?? 3);
  const kinds = options.poseKinds ?? Object.values(PoseKind);
  const depthStep = 4 * (width + height);
  // The default cut mix (10% bottom, 5% top, 12% sideways) sums to 0.27; edgeCut scales it.
  const cutScale = (options.edgeCut ?? 0.27) / 0.27;
  const crowd = options.crowd ?? 0;
  const crowdDepth = options.crowdDepth ?? 0;
  const placedFeet: { footU: number; footV: number; pixelHeight: number }[] = [];
  const people = Array.from({ length: count }, () => {
    const kind = random.pick(kinds);
    const shape = sampleBodyShape(random);
    const humanoid = poseHumanoid(shape, samplePose(random, kind));
    const facing = random.next();
    const yaw =
      facing < 0.35 ? random.uniform(-35, 35)
      : facing < 0.5 ? 180 + random.uniform(-35, 35)
      : facing < 0.85 ? (random.chance(0.5) ? 1 : -1) * random.uniform(60, 120)
      : random.uniform(-180, 180);
    const [low, high] = options.personHeight ?? (count === 1 ? [0.5, 0.95] : [0.3, 0.8]);
    let pixelHeight = height * random.uniform(low, high);
    // Mostly whole people; some cut by the picture's border (their outside joints get v = 0).
    const cut = random.next();
    let footV =
      cut < 0.1 * cutScale ? random.uniform(height * 0.7, height + 0.4 * pixelHeight)
      : cut < 0.15 * cutScale ? random.uniform(pixelHeight * 0.6, pixelHeight * 0.92)
      : random.uniform(Math.min(height, pixelHeight * 0.95), height + 0.04 * pixelHeight);
    let footU = random.chance(0.12 * cutScale) ? random.uniform(-0.1, 1.1) * width : random.uniform(0.1, 0.9) * width;
    const neighbour = crowd > 0 && placedFeet.length > 0 && random.chance(crowd) ? random.pick(placedFeet) : undefined;
    if (neighbour !== undefined && crowdDepth > 0 && random.chance(crowdDepth)) {
      // Behind an earlier person: smaller, feet higher up, anywhere from one side of them to the other.
      pixelHeight = neighbour.pixelHeight * random.uniform(0.5, 0.95);
      footU = neighbour.footU + random.uniform(-0.35, 0.35) * neighbour.pixelHeight;
      footV = neighbour.footV - random.uniform(0.15, 0.5) * neighbour.pixelHeight;
    } else if (neighbour !== undefined) {
      // Beside an earlier person, a little nearer or farther: their boxes overlap by up to about half.
      footU = neighbour.footU + random.uniform(0.1, 0.45) * (random.chance(0.5) ? 1 : -1) * Math.max(neighbour.pixelHeight, pixelHeight);
      footV = neighbour.footV + random.uniform(-0.08, 0.08) * neighbour.pixelHeight;
    }
    placedFeet.push({ footU, footV, pixelHeight });
    const pitch = random.uniform(-5, 15);
    return { kind, shape, humanoid, yaw, pixelHeight, footU, footV, pitch, palette: samplePalette(random) };
  });
  // Lower feet are nearer the camera: draw order and depth follow them.
  people.sort((a, b) => a.footV - b.footV);

  // Body frame (x left, y up, z forward) → camera (x right, y up, z away) → image (u right, v down, w away).
  const towardsCamera: Mat3 = [1, 0, 0, 0, 1, 0, 0, 0, -1];
  const imageAxes: Mat3 = [1, 0, 0, 0, -1, 0, 0, 0, 1];
  const placed = people.map((person, rank) => {
    const rotation = multiply(imageAxes, multiply(rotationX(-person.pitch * DEG), multiply(rotationY(person.yaw * DEG), towardsCamera)));
    const linear = rotation.map((x) => x * person.pixelHeight) as unknown as Mat3;
    const placement: Placement = { linear, offset: [person.footU, person.footV, (count - rank) * depthStep], scale: person.pixelHeight };
    const id = rank + 1;
    for (const part of person.humanoid.parts) drawPart(raster, part, placement, person.palette[part.material], id);
    return { person, placement, id };
  });

  for (const { person, placement } of placed) {
    if (!random.chance(options.occlusion ?? 0.3)) continue;
    drawOccluder(raster, random, place(placement, person.humanoid.joints[random.int(0, 16)]!), person.pixelHeight, depthStep);
  }

  const annotated = placed.flatMap(({ person, placement, id }) => {
    const { keypoints, numKeypoints } = annotateJoints(raster, person.humanoid, placement, id);
    const extent = ownedExtent(raster, id);
    if (extent === undefined) return [];
    return [{ keypoints, numKeypoints, bbox: extent.bbox, area: extent.area, poseKind: person.kind, yaw: Math.round(person.yaw * 10) / 10 }];
  });

  if (random.chance(options.blur ?? 0.3)) blurImage(image, random.int(1, 2));
  const sigma = random.uniform(0, options.noise ?? 8);
  if (sigma >= 0.5) addNoise(image, random, sigma);
  return { image, people: annotated };
}

function drawOccluder(raster: DepthRaster, random: SeededRandom, near: Vec3, personHeight: number, depthStep: number): void {
  const halfU = personHeight * random.uniform(0.07, 0.22);
  const halfV = personHeight * random.uniform(0.07, 0.22);
  const centre: Vec3 = [near[0] + random.uniform(-0.5, 0.5) * halfU, near[1] + random.uniform(-0.5, 0.5) * halfV, -depthStep];
  const colour = randomColour(random, [0, 1], [0.15, 1]);
  const angle = random.uniform(-0.5, 0.5);
  const [c, s] = [Math.cos(angle), Math.sin(angle)];
  if (random.chance(0.5)) {
    // A flat-fronted box, turned a little in the picture plane.
    const depth = Math.min(halfU, halfV);
    const planes = [
      { normal: [c, s, 0] as Vec3, offset: c * centre[0] + s * centre[1] + halfU },
      { normal: [-c, -s, 0] as Vec3, offset: -(c * centre[0] + s * centre[1]) + halfU },
      { normal: [-s, c, 0] as Vec3, offset: -s * centre[0] + c * centre[1] + halfV },
      { normal: [s, -c, 0] as Vec3, offset: s * centre[0] - c * centre[1] + halfV },
      { normal: [0, 0, -1] as Vec3, offset: -centre[2] },
      { normal: [0, 0, 1] as Vec3, offset: centre[2] + depth },
    ];
    const reach = halfU + halfV;
    const corners: Vec3[] = [
      [centre[0] - reach, centre[1] - reach, centre[2]],
      [centre[0] + reach, centre[1] + reach, centre[2]],
    ];
    raster.solid(planes, corners, colour, OCCLUDER);
  } else {
    raster.ellipsoid(centre, [c * halfU, -s * halfV, 0, s * halfU, c * halfV, 0, 0, 0, Math.min(halfU, halfV)], colour, OCCLUDER);
  }
}

/**
 * A placed humanoid's keypoints as COCO annotates them: [x, y, v] per joint in picture pixels (to 0.01), v 2 where
 * the joint's pixel shows this person (`owner`) at the joint's depth within its tolerance, 1 where something hides
 * it, and 0, 0, 0 outside the picture; `numKeypoints` counts the joints inside it.
 */
export function annotateJoints(raster: DepthRaster, humanoid: PosedHumanoid, placement: Placement, owner: number): { keypoints: number[]; numKeypoints: number } {
  const { width, height } = raster.image;
  const keypoints: number[] = [];
  let numKeypoints = 0;
  humanoid.joints.forEach((joint, j) => {
    const [u, v, w] = place(placement, joint);
    const x = Math.round(u * 100) / 100;
    const y = Math.round(v * 100) / 100;
    if (!(x >= 0 && x < width && y >= 0 && y < height)) {
      keypoints.push(0, 0, 0);
      return;
    }
    const p = Math.floor(y) * width + Math.floor(x);
    const seen = raster.owner[p] === owner && (raster.depth[p] as number) >= w - (humanoid.depthTolerance[j] as number) * placement.scale;
    keypoints.push(x, y, seen ? 2 : 1);
    numKeypoints++;
  });
  return { keypoints, numKeypoints };
}

/** The tight box and pixel count of what `id` owns in the raster, or undefined when nothing of it is seen. */
export function ownedExtent(raster: DepthRaster, id: number): { bbox: [number, number, number, number]; area: number } | undefined {
  const { width, height } = raster.image;
  let minX = width;
  let minY = height;
  let maxX = -1;
  let maxY = -1;
  let area = 0;
  for (let y = 0, p = 0; y < height; y++) {
    for (let x = 0; x < width; x++, p++) {
      if (raster.owner[p] !== id) continue;
      area++;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
  }
  return area === 0 ? undefined : { bbox: [minX, minY, maxX - minX + 1, maxY - minY + 1], area };
}

/** Separable [1 2 1]/4 blur, `passes` times (σ ≈ 0.7 px per pass), edges clamped. */
function blurImage(image: RgbImage, passes: number): void {
  const { width, height, data } = image;
  const scratch = new Uint8Array(data.length);
  for (let pass = 0; pass < passes; pass++) {
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let x = 0; x < width; x++) {
        const left = row + Math.max(0, x - 1) * 3;
        const mid = row + x * 3;
        const right = row + Math.min(width - 1, x + 1) * 3;
        for (let c = 0; c < 3; c++) scratch[mid + c] = (data[left + c]! + 2 * data[mid + c]! + data[right + c]! + 2) >> 2;
      }
    }
    const rowBytes = width * 3;
    for (let y = 0; y < height; y++) {
      const up = Math.max(0, y - 1) * rowBytes;
      const mid = y * rowBytes;
      const down = Math.min(height - 1, y + 1) * rowBytes;
      for (let i = 0; i < rowBytes; i++) data[mid + i] = (scratch[up + i]! + 2 * scratch[mid + i]! + scratch[down + i]! + 2) >> 2;
    }
  }
}

/** Zero-mean uniform noise with standard deviation `sigma`, independent per channel. */
export function addNoise(image: RgbImage, random: SeededRandom, sigma: number): void {
  const data = image.data;
  // One 32-bit draw gives three channels; a byte b is uniform on 0–255, whose standard deviation is 73.9.
  const k = sigma / 73.9;
  for (let p = 0; p < data.length; p += 3) {
    const bits = random.nextUint32();
    for (let c = 0; c < 3; c++) {
      const value = data[p + c]! + (((bits >>> (8 * c)) & 255) - 127.5) * k;
      data[p + c] = value < 0 ? 0 : value > 255 ? 255 : Math.round(value);
    }
  }
}

