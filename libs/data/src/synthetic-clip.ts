import { AppError, SeededRandom } from "@poseloop/core";
import { createRgbImage, type Rgb, type RgbImage } from "@poseloop/vision";
import { DepthRaster } from "./depth-raster.js";
import { poseHumanoid, PoseKind, sampleBodyShape, samplePose, type BodyShape, type Material, type PoseAngles } from "./humanoid-model.js";
import { multiply, rotationX, rotationY, type Mat3 } from "./rotation-3d.js";
import { paintBackground, randomColour } from "./synthetic-background.js";
import { addNoise, annotateJoints, drawPart, ownedExtent, type Placement } from "./synthetic-scene.js";

/**
 * One person's walk through a clip: on screen from frame `enter` to frame `leave` (both included), feet moving
 * in a straight line from `from` to `to` (fractions of the frame's width and height; outside [0, 1] is off
 * screen, so a walk from -0.1 enters through the left border), `height` tall (a fraction of the frame's height).
 */
export interface ClipWalk {
  readonly enter: number;
  readonly leave: number;
  readonly from: readonly [u: number, v: number];
  readonly to: readonly [u: number, v: number];
  readonly height: number;
}

export interface SyntheticClipOptions {
  readonly width: number;
  readonly height: number;
  readonly frames: number;
  readonly seed: number;
  /** Frames per second of the timestamps; default 30. */
  readonly fps?: number;
  /** The walks; default `defaultClipWalks(frames)`: two people crossing, one entering, one leaving. */
  readonly walks?: readonly ClipWalk[];
  /**
   * From this frame on, another shot: a new background, and every walker redrawn as someone else (a new body,
   * new clothes, a new identity) at the same place, so only the picture tells that the people changed.
   */
  readonly sceneCutAt?: number;
  /** Standard deviation of the pixel noise, 0–255 scale, drawn anew each frame (a camera's); default 3. */
  readonly noise?: number;
}

/** One person in a frame of the clip, annotated as the scene renderer annotates (COCO-17, visible-pixel box). */
export interface ClipPerson {
  /** Who this is: the same number in every frame the person is seen in; a scene cut starts new numbers. */
  readonly identity: number;
  /** [x, y, v] per COCO-17 keypoint; v = 0 (and x = y = 0) outside the picture, 1 hidden, 2 seen. */
  readonly keypoints: number[];
  /** The tight box of the person's visible pixels, [x, y, width, height]. */
  readonly bbox: [number, number, number, number];
  readonly area: number;
}

export interface ClipFrame {
  /** 0, 1, 2...: the frame's place in the clip. */
  readonly index: number;
  readonly ptsUs: number;
  readonly image: RgbImage;
  /** The people with at least one visible pixel, back to front. */
  readonly people: ClipPerson[];
  /** 0 before the scene cut, 1 from it on. */
  readonly shot: number;
}

/**
 * The default walks of a clip of `frames` frames: a near person walking right and a far one walking left,
 * crossing mid-clip (the far one's head stays above the near one's, so neither disappears); a third walking
 * in through the left border in the second quarter; a fourth walking out through the right border by the
 * middle.
 */
export function defaultClipWalks(frames: number): ClipWalk[] {
  const last = frames - 1;
  return [
    { enter: 0, leave: last, from: [0.15, 0.97], to: [0.85, 0.97], height: 0.62 },
    { enter: 0, leave: last, from: [0.85, 0.7], to: [0.15, 0.7], height: 0.42 },
    { enter: Math.round(frames * 0.25), leave: last, from: [-0.12, 0.82], to: [0.3, 0.82], height: 0.5 },
    { enter: 0, leave: Math.round(frames * 0.5), from: [0.75, 0.9], to: [1.15, 0.9], height: 0.55 },
  ];
}

/** Problems with clip options (empty when valid). */
export function clipOptionProblems(options: SyntheticClipOptions): string[] {
  const problems: string[] = [];
  const { width, height, frames } = options;
  if (!Number.isInteger(width) || width < 16 || width > 8192) problems.push(`width must be an integer from 16 to 8192, got ${width}`);
  if (!Number.isInteger(height) || height < 16 || height > 8192) problems.push(`height must be an integer from 16 to 8192, got ${height}`);
  if (!Number.isInteger(frames) || frames < 1) problems.push(`frames must be a positive integer, got ${frames}`);
  if (!Number.isSafeInteger(options.seed)) problems.push(`seed must be a safe integer, got ${options.seed}`);
  if (options.fps !== undefined && !(options.fps > 0 && options.fps <= 1000)) problems.push(`fps must be in (0, 1000], got ${options.fps}`);
  if (options.noise !== undefined && !(options.noise >= 0 && options.noise <= 64)) problems.push(`noise must be from 0 to 64, got ${options.noise}`);
  if (options.sceneCutAt !== undefined && !(Number.isInteger(options.sceneCutAt) && options.sceneCutAt >= 1 && options.sceneCutAt < frames)) {
    problems.push(`sceneCutAt must be an integer frame from 1 to ${frames - 1}, got ${options.sceneCutAt}`);
  }
  const walks = options.walks ?? [];
  if (walks.length > 32) problems.push(`at most 32 walks, got ${walks.length}`);
  walks.forEach((walk, i) => {
    if (!(Number.isInteger(walk.enter) && Number.isInteger(walk.leave) && walk.enter >= 0 && walk.enter <= walk.leave)) {
      problems.push(`walks[${i}]: enter and leave must be integer frames with 0 <= enter <= leave, got ${walk.enter} and ${walk.leave}`);
    }
    if (![...walk.from, ...walk.to].every(Number.isFinite)) problems.push(`walks[${i}]: from and to must be finite`);
    if (!(walk.height > 0 && walk.height <= 2)) problems.push(`walks[${i}]: height must be in (0, 2], got ${walk.height}`);
  });
  return problems;
}

interface Walker {
  readonly walk: ClipWalk;
  readonly shape: BodyShape;
  /** The two extremes of the stride the walk swings between. */
  readonly stride: readonly [PoseAngles, PoseAngles];
  readonly palette: Record<Material, Rgb>;
}

const DEG = Math.PI / 180;
/** Strides per second of walking. */
const STRIDE_HZ = 0.9;

/**
 * A deterministic clip of people walking over a still background, for tracking tests and demos: each frame
 * rendered with the scene renderer's humanoids and depth raster, annotated with every person's box, keypoints
 * and identity. The same options give the same pixels and annotations.
 */
export function* syntheticClip(options: SyntheticClipOptions): Generator<ClipFrame, void, undefined> {
  const problems = clipOptionProblems(options);
  if (problems.length > 0) throw AppError.invalid("synthetic clip options", problems);
  const { width, height, frames, seed } = options;
  const fps = options.fps ?? 30;
  const walks = options.walks ?? defaultClipWalks(frames);
  const shots = options.sceneCutAt === undefined ? 1 : 2;
  const backgrounds = Array.from({ length: shots }, (_, shot) => {
    const image = createRgbImage(width, height);
    paintBackground(image, new SeededRandom(seed, shot, 0));
    return image;
  });
  const cast = Array.from({ length: shots }, (_, shot) => walks.map((walk, i) => castWalker(new SeededRandom(seed, shot, i + 1), walk)));
  const depthStep = 4 * (width + height);
  for (let index = 0; index < frames; index++) {
    const shot = options.sceneCutAt !== undefined && index >= options.sceneCutAt ? 1 : 0;
    const image = createRgbImage(width, height);
    image.data.set((backgrounds[shot] as RgbImage).data);
    const raster = new DepthRaster(image);
    const seconds = index / fps;
    const present = (cast[shot] as Walker[])
      .map((walker, i) => ({ walker, identity: shot * walks.length + i + 1 }))
      .filter(({ walker }) => index >= walker.walk.enter && index <= walker.walk.leave)
      .map(({ walker, identity }) => {
        const { walk } = walker;
        const t = walk.leave === walk.enter ? 0 : (index - walk.enter) / (walk.leave - walk.enter);
        const u = (walk.from[0] + (walk.to[0] - walk.from[0]) * t) * width;
        const v = (walk.from[1] + (walk.to[1] - walk.from[1]) * t) * height;
        const swing = 0.5 + 0.5 * Math.sin(2 * Math.PI * STRIDE_HZ * seconds + identity);
        const pose = blendPoses(walker.stride[0], walker.stride[1], swing);
        // Sideways, facing the way the person walks.
        const yaw = walk.to[0] >= walk.from[0] ? 90 : -90;
        return { walker, identity, u, v, yaw, pose, pixelHeight: walk.height * height };
      })
      // Lower feet are nearer the camera: draw order and depth follow them.
      .sort((a, b) => a.v - b.v);
    const towardsCamera: Mat3 = [1, 0, 0, 0, 1, 0, 0, 0, -1];
    const imageAxes: Mat3 = [1, 0, 0, 0, -1, 0, 0, 0, 1];
    const placed = present.map((person, rank) => {
      const humanoid = poseHumanoid(person.walker.shape, person.pose);
      const rotation = multiply(imageAxes, multiply(rotationX(-5 * DEG), multiply(rotationY(person.yaw * DEG), towardsCamera)));
      const linear = rotation.map((x) => x * person.pixelHeight) as unknown as Mat3;
      const placement: Placement = { linear, offset: [person.u, person.v, (present.length - rank) * depthStep], scale: person.pixelHeight };
      const owner = rank + 1;
      for (const part of humanoid.parts) drawPart(raster, part, placement, person.walker.palette[part.material], owner);
      return { person, humanoid, placement, owner };
    });
    const people = placed.flatMap(({ person, humanoid, placement, owner }) => {
      const extent = ownedExtent(raster, owner);
      if (extent === undefined) return [];
      const { keypoints } = annotateJoints(raster, humanoid, placement, owner);
      return [{ identity: person.identity, keypoints, bbox: extent.bbox, area: extent.area }];
    });
    const noise = options.noise ?? 3;
    if (noise > 0) addNoise(image, new SeededRandom(seed, 1000 + index), noise);
    yield { index, ptsUs: Math.round((index * 1e6) / fps), image, people, shot };
  }
}

function castWalker(random: SeededRandom, walk: ClipWalk): Walker {
  const shape = sampleBodyShape(random);
  const stride: [PoseAngles, PoseAngles] = [samplePose(random, PoseKind.WALKING), samplePose(random, PoseKind.WALKING)];
  // The second extreme swings the limbs the other way, so the blend between them is a stride.
  const [a, b] = stride;
  stride[1] = { ...b, leftArm: a.rightArm, rightArm: a.leftArm, leftLeg: a.rightLeg, rightLeg: a.leftLeg };
  const shirt = randomColour(random, [0.3, 1], [0.3, 1]);
  const trousers = randomColour(random, [0, 0.8], [0.1, 0.7]);
  const skin: Rgb = [Math.round(random.uniform(90, 250)), Math.round(random.uniform(60, 200)), Math.round(random.uniform(40, 170))];
  const palette: Record<Material, Rgb> = {
    skin,
    shirt,
    sleeve: shirt,
    trousers,
    shin: skin,
    shoe: [30, 30, 30],
    hair: randomColour(random, [0, 0.6], [0.05, 0.5]),
    eye: [35, 25, 25],
    nose: [Math.round(skin[0] * 0.85), Math.round(skin[1] * 0.8), Math.round(skin[2] * 0.8)],
  };
  return { walk, shape, stride, palette };
}

function blendPoses(a: PoseAngles, b: PoseAngles, t: number): PoseAngles {
  const mix = (x: number, y: number): number => x + (y - x) * t;
  const limb = (x: PoseAngles["leftArm"], y: PoseAngles["leftArm"]): PoseAngles["leftArm"] => ({
    flex: mix(x.flex, y.flex),
    abduct: mix(x.abduct, y.abduct),
    twist: mix(x.twist, y.twist),
    bend: mix(x.bend, y.bend),
  });
  return {
    torsoLean: mix(a.torsoLean, b.torsoLean),
    torsoSide: mix(a.torsoSide, b.torsoSide),
    torsoTwist: mix(a.torsoTwist, b.torsoTwist),
    headYaw: mix(a.headYaw, b.headYaw),
    headPitch: mix(a.headPitch, b.headPitch),
    headRoll: mix(a.headRoll, b.headRoll),
    leftArm: limb(a.leftArm, b.leftArm),
    rightArm: limb(a.rightArm, b.rightArm),
    leftLeg: limb(a.leftLeg, b.leftLeg),
    rightLeg: limb(a.rightLeg, b.rightLeg),
  };
}

