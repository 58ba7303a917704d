import type { SeededRandom } from "@poseloop/core";
import {
  add,
  addScaled,
  IDENTITY_3,
  multiply,
  rotationX,
  rotationY,
  rotationZ,
  transform,
  type Mat3,
  type Vec3,
} from "./rotation-3d.js";

/**
 * An articulated humanoid for the synthetic dataset. Lengths are fractions of the standing height (1), after
 * Drillis & Contini's segment proportions (shoulder at 0.818 H, hip 0.53, knee 0.285, ankle 0.039, upper arm
 * 0.186, forearm 0.146); each person varies them a little. The body frame has x to the person's left, y up,
 * z forward (the way they face), the origin on the ground under the hips.
 */
export interface BodyShape {
  readonly headRadii: Vec3;
  readonly neckLength: number;
  readonly shoulderHalfWidth: number;
  readonly hipHalfWidth: number;
  readonly torsoLength: number;
  readonly upperArm: number;
  readonly forearm: number;
  readonly hand: number;
  readonly thigh: number;
  readonly shank: number;
  readonly ankleHeight: number;
  readonly foot: number;
  /** Limb radii (also fractions of the height); the torso's is its half thickness front to back. */
  readonly radii: {
    readonly upperArm: number;
    readonly forearm: number;
    readonly hand: number;
    readonly thigh: number;
    readonly shank: number;
    readonly foot: number;
    readonly neck: number;
    readonly torso: number;
  };
  readonly hair: boolean;
  readonly longSleeves: boolean;
  readonly longTrousers: boolean;
}

/** The postures the generator draws from. */
export const PoseKind = {
  STANDING: "standing",
  WALKING: "walking",
  CROUCHING: "crouching",
  ARMS_UP: "arms-up",
  WAVING: "waving",
  LUNGE: "lunge",
  RANDOM: "random",
} as const;

export type PoseKind = (typeof PoseKind)[keyof typeof PoseKind];

interface LimbAngles {
  /** Shoulder: forward raise (flexion); hip: forward raise of the thigh. Degrees. */
  flex: number;
  /** Raise sideways, away from the body. Degrees. */
  abduct: number;
  /** Rotation about the upper limb's own axis, which turns the plane the elbow bends in. Degrees. */
  twist: number;
  /** Elbow or knee bend, 0 straight. Degrees. */
  bend: number;
}

/** Joint angles in degrees. */
export interface PoseAngles {
  torsoLean: number;
  torsoSide: number;
  torsoTwist: number;
  headYaw: number;
  headPitch: number;
  headRoll: number;
  leftArm: LimbAngles;
  rightArm: LimbAngles;
  leftLeg: LimbAngles;
  rightLeg: LimbAngles;
}

type Range = readonly [min: number, max: number];

/** The range of motion each angle is kept in (degrees), roughly that of an adult. */
export const JOINT_LIMITS = {
  torsoLean: [-15, 55],
  torsoSide: [-20, 20],
  torsoTwist: [-35, 35],
  headYaw: [-70, 70],
  headPitch: [-35, 40],
  headRoll: [-25, 25],
  arm: { flex: [-60, 180], abduct: [-10, 180], twist: [-90, 90], bend: [0, 150] },
  leg: { flex: [-30, 125], abduct: [-10, 50], twist: [-30, 40], bend: [0, 150] },
} as const satisfies Record<string, Range | Record<keyof LimbAngles, Range>>;

/** Where the surface of a part takes its colour from; the scene maps these to one person's palette. */
export type Material = "skin" | "shirt" | "sleeve" | "trousers" | "shin" | "shoe" | "hair" | "eye" | "nose";

export type BodyPart =
  | { readonly kind: "capsule"; readonly a: Vec3; readonly b: Vec3; readonly radius: number; readonly material: Material }
  /** Points centre + axes·u for |u| ≤ 1; the columns of `axes` are the semi-axis vectors. */
  | { readonly kind: "ellipsoid"; readonly centre: Vec3; readonly axes: Mat3; readonly material: Material }
  /** The convex solid where normal·p ≤ offset for every plane; `corners` bound it. */
  | {
      readonly kind: "solid";
      readonly planes: readonly { readonly normal: Vec3; readonly offset: number }[];
      readonly corners: readonly Vec3[];
      readonly material: Material;
    };

/** A posed humanoid in its body frame. */
export interface PosedHumanoid {
  /** The 17 COCO keypoints. */
  readonly joints: readonly Vec3[];
  /**
   * How far in front of each keypoint the body's own surface may lie while the keypoint still counts as
   * visible: the thickness of the part it sits in (a shoulder lies half a torso behind the chest).
   */
  readonly depthTolerance: readonly number[];
  readonly parts: readonly BodyPart[];
}

const DEG = Math.PI / 180;

/** A body with randomly varied proportions, girth and clothing. */
export function sampleBodyShape(random: SeededRandom): BodyShape {
  const vary = (value: number, spread = 0.06): number => value * random.uniform(1 - spread, 1 + spread);
  const girth = random.uniform(0.8, 1.35);
  const headRy = vary(0.066, 0.05);
  const upperArm = vary(0.186);
  const thigh = vary(0.245);
  const shank = vary(0.246);
  const ankleHeight = 0.039;
  const neckLength = vary(0.045, 0.1);
  // The torso takes up what the legs, neck and head leave, so every body stands 1 tall.
  const torsoLength = 1 - ankleHeight - shank - thigh - neckLength - 2 * headRy * 0.95;
  return {
    headRadii: [vary(0.052, 0.06), headRy, vary(0.06, 0.05)],
    neckLength,
    shoulderHalfWidth: vary(0.125, 0.08) * Math.sqrt(girth),
    hipHalfWidth: vary(0.085, 0.1) * Math.sqrt(girth),
    torsoLength,
    upperArm,
    forearm: vary(0.146),
    hand: vary(0.085),
    thigh,
    shank,
    ankleHeight,
    foot: vary(0.13),
    radii: {
      upperArm: 0.034 * girth,
      forearm: 0.027 * girth,
      hand: 0.024 * Math.sqrt(girth),
      thigh: 0.055 * girth,
      shank: 0.04 * girth,
      foot: 0.024,
      neck: 0.028 * girth,
      torso: 0.07 * girth,
    },
    hair: random.chance(0.85),
    longSleeves: random.chance(0.5),
    longTrousers: random.chance(0.7),
  };
}

const clamp = (value: number, [min, max]: Range): number => Math.min(max, Math.max(min, value));

/** A posture of the given kind (or a random kind), with every angle within JOINT_LIMITS. */
export function samplePose(random: SeededRandom, kind?: PoseKind): PoseAngles {
  const u = (min: number, max: number): number => random.uniform(min, max);
  const relaxedArm = (): LimbAngles => ({ flex: u(-15, 25), abduct: u(3, 25), twist: u(-20, 30), bend: u(0, 40) });
  const raisedArm = (): LimbAngles =>
    random.chance(0.5)
      ? { flex: u(130, 180), abduct: u(0, 35), twist: u(-30, 30), bend: u(0, 60) }
      : { flex: u(-10, 40), abduct: u(110, 175), twist: u(-60, 60), bend: u(0, 100) };
  const straightLeg = (): LimbAngles => ({ flex: u(-5, 10), abduct: u(0, 10), twist: u(-10, 20), bend: u(0, 10) });
  const chosen = kind ?? random.pick(Object.values(PoseKind));
  const base: PoseAngles = {
    torsoLean: u(-5, 8),
    torsoSide: u(-5, 5),
    torsoTwist: u(-10, 10),
    headYaw: u(-30, 30),
    headPitch: u(-15, 15),
    headRoll: u(-8, 8),
    leftArm: relaxedArm(),
    rightArm: relaxedArm(),
    leftLeg: straightLeg(),
    rightLeg: straightLeg(),
  };
  switch (chosen) {
    case "standing":
      break;
    case "walking": {
      const phase = u(0, 2 * Math.PI);
      const stride = u(15, 35);
      const swing = Math.sin(phase);
      base.leftLeg = { flex: stride * swing, abduct: u(0, 6), twist: u(-5, 10), bend: 8 + 50 * Math.max(0, Math.sin(phase - 0.9)) };
      base.rightLeg = { flex: -stride * swing, abduct: u(0, 6), twist: u(-5, 10), bend: 8 + 50 * Math.max(0, Math.sin(phase + Math.PI - 0.9)) };
      base.leftArm = { flex: -0.8 * stride * swing, abduct: u(5, 15), twist: u(0, 20), bend: u(10, 45) };
      base.rightArm = { flex: 0.8 * stride * swing, abduct: u(5, 15), twist: u(0, 20), bend: u(10, 45) };
      base.torsoLean = u(0, 10);
      break;
    }
    case "crouching": {
      const hip = u(60, 120);
      const knee = Math.min(145, hip + u(0, 40));
      base.leftLeg = { flex: hip + u(-10, 10), abduct: u(5, 30), twist: u(0, 30), bend: knee + u(-10, 5) };
      base.rightLeg = { flex: hip + u(-10, 10), abduct: u(5, 30), twist: u(0, 30), bend: knee + u(-10, 5) };
      base.torsoLean = u(15, 50);
      base.leftArm = { flex: u(0, 80), abduct: u(5, 35), twist: u(-20, 40), bend: u(20, 110) };
      base.rightArm = { flex: u(0, 80), abduct: u(5, 35), twist: u(-20, 40), bend: u(20, 110) };
      base.headPitch = u(-30, 10);
      break;
    }
    case "arms-up":
      base.leftArm = raisedArm();
      base.rightArm = random.chance(0.7) ? { ...base.leftArm, flex: base.leftArm.flex + u(-15, 15) } : raisedArm();
      base.headPitch = u(-30, 5);
      break;
    case "waving":
      if (random.chance(0.5)) base.leftArm = raisedArm();
      else base.rightArm = raisedArm();
      break;
    case "lunge": {
      const front = { flex: u(40, 85), abduct: u(0, 15), twist: u(-5, 20), bend: u(40, 95) };
      const back = { flex: u(-25, -5), abduct: u(0, 10), twist: u(-5, 15), bend: u(0, 25) };
      [base.leftLeg, base.rightLeg] = random.chance(0.5) ? [front, back] : [back, front];
      base.torsoLean = u(0, 25);
      base.leftArm = { flex: u(-30, 100), abduct: u(5, 60), twist: u(-30, 30), bend: u(0, 90) };
      base.rightArm = { flex: u(-30, 100), abduct: u(5, 60), twist: u(-30, 30), bend: u(0, 90) };
      break;
    }
    case "random": {
      const anyLimb = (limits: Record<keyof LimbAngles, Range>): LimbAngles => ({
        flex: u(...limits.flex),
        abduct: u(limits.abduct[0], limits.abduct[1] * 0.7),
        twist: u(...limits.twist),
        bend: u(...limits.bend),
      });
      base.leftArm = anyLimb(JOINT_LIMITS.arm);
      base.rightArm = anyLimb(JOINT_LIMITS.arm);
      // One leg stays under the body, so the figure stands rather than floats.
      base.leftLeg = anyLimb({ ...JOINT_LIMITS.leg, flex: [-20, 90], abduct: [-5, 35] });
      base.torsoLean = u(-10, 40);
      base.torsoSide = u(-15, 15);
      base.torsoTwist = u(-30, 30);
      base.headYaw = u(-60, 60);
      break;
    }
  }
  return clampPose(base);
}

function clampPose(pose: PoseAngles): PoseAngles {
  const limb = (angles: LimbAngles, limits: Record<keyof LimbAngles, Range>): LimbAngles => ({
    flex: clamp(angles.flex, limits.flex),
    abduct: clamp(angles.abduct, limits.abduct),
    twist: clamp(angles.twist, limits.twist),
    bend: clamp(angles.bend, limits.bend),
  });
  return {
    torsoLean: clamp(pose.torsoLean, JOINT_LIMITS.torsoLean),
    torsoSide: clamp(pose.torsoSide, JOINT_LIMITS.torsoSide),
    torsoTwist: clamp(pose.torsoTwist, JOINT_LIMITS.torsoTwist),
    headYaw: clamp(pose.headYaw, JOINT_LIMITS.headYaw),
    headPitch: clamp(pose.headPitch, JOINT_LIMITS.headPitch),
    headRoll: clamp(pose.headRoll, JOINT_LIMITS.headRoll),
    leftArm: limb(pose.leftArm, JOINT_LIMITS.arm),
    rightArm: limb(pose.rightArm, JOINT_LIMITS.arm),
    leftLeg: limb(pose.leftLeg, JOINT_LIMITS.leg),
    rightLeg: limb(pose.rightLeg, JOINT_LIMITS.leg),
  };
}

const scaleColumns = (m: Mat3, [sx, sy, sz]: Vec3): Mat3 => [
  m[0] * sx, m[1] * sy, m[2] * sz,
  m[3] * sx, m[4] * sy, m[5] * sz,
  m[6] * sx, m[7] * sy, m[8] * sz,
];

/**
 * Forward kinematics: places every joint and body part for `pose`, then stands the figure on the ground
 * (its lowest foot touching y = 0).
 */
export function poseHumanoid(shape: BodyShape, pose: PoseAngles): PosedHumanoid {
  const r = shape.radii;
  const parts: BodyPart[] = [];
  const pelvis = IDENTITY_3;
  const torso = multiply(multiply(multiply(pelvis, rotationX(pose.torsoLean * DEG)), rotationZ(-pose.torsoSide * DEG)), rotationY(pose.torsoTwist * DEG));
  const at = (frame: Mat3, origin: Vec3, local: Vec3): Vec3 => add(origin, transform(frame, local));

  const hipCentre: Vec3 = [0, 0, 0];
  const hips = { left: at(pelvis, hipCentre, [shape.hipHalfWidth, 0, 0]), right: at(pelvis, hipCentre, [-shape.hipHalfWidth, 0, 0]) };
  const neck = at(torso, hipCentre, [0, shape.torsoLength, 0]);
  const shoulders = {
    left: at(torso, neck, [shape.shoulderHalfWidth, -0.012, 0]),
    right: at(torso, neck, [-shape.shoulderHalfWidth, -0.012, 0]),
  };

  // Torso: a tapered slab from the crotch to the shoulders, the lower part in trousers, the upper in the shirt.
  const waist = shape.torsoLength * 0.32;
  const bottom = -0.06;
  const top = shape.torsoLength + 0.022;
  const widthAtHips = shape.hipHalfWidth + r.thigh * 0.9;
  const widthAtShoulders = shape.shoulderHalfWidth + 0.004;
  const taper = (widthAtShoulders - widthAtHips) / shape.torsoLength;
  const slab = (from: number, to: number, material: Material): BodyPart => {
    const local: { normal: Vec3; offset: number }[] = [
      { normal: [0, 0, 1], offset: r.torso * 1.05 },
      { normal: [0, 0, -1], offset: r.torso },
      { normal: [0, 1, 0], offset: to },
      { normal: [0, -1, 0], offset: -from },
      { normal: [1, -taper, 0], offset: widthAtHips },
      { normal: [-1, -taper, 0], offset: widthAtHips },
    ];
    const corners: Vec3[] = [];
    for (const y of [from, to]) {
      const w = widthAtHips + taper * y;
      for (const x of [-w, w]) for (const z of [-r.torso, r.torso * 1.05]) corners.push(transform(torso, [x, y, z]));
    }
    return { kind: "solid", planes: local.map(({ normal, offset }) => ({ normal: transform(torso, normal), offset })), corners, material };
  };
  parts.push(slab(bottom, waist, "trousers"), slab(waist, top, "shirt"));
  parts.push({ kind: "capsule", a: shoulders.left, b: shoulders.right, radius: r.upperArm * 1.1, material: "shirt" });
  parts.push({ kind: "capsule", a: hips.left, b: hips.right, radius: r.thigh * 0.95, material: "trousers" });

  // Neck and head.
  const head = multiply(multiply(multiply(torso, rotationY(pose.headYaw * DEG)), rotationX(pose.headPitch * DEG)), rotationZ(-pose.headRoll * DEG));
  const neckTop = at(torso, neck, [0, shape.neckLength, 0]);
  const [rx, ry, rz] = shape.headRadii;
  const headCentre = at(head, neckTop, [0, 0.8 * ry, 0.12 * rz]);
  const onHead = (x: number, y: number, z: number): Vec3 => at(head, headCentre, [x * rx, y * ry, z * rz]);
  parts.push({ kind: "capsule", a: at(torso, neck, [0, -0.02, 0]), b: at(head, neckTop, [0, 0.3 * ry, 0]), radius: r.neck, material: "skin" });
  parts.push({ kind: "ellipsoid", centre: headCentre, axes: scaleColumns(head, shape.headRadii), material: "skin" });
  if (shape.hair) parts.push({ kind: "ellipsoid", centre: onHead(0, 0.3, -0.12), axes: scaleColumns(head, [1.06 * rx, 0.85 * ry, rz]), material: "hair" });
  const eyeRadius = 0.1 * rx;
  for (const side of [1, -1]) {
    parts.push({ kind: "ellipsoid", centre: onHead(0.36 * side, 0.12, 0.86), axes: scaleColumns(head, [eyeRadius, eyeRadius, eyeRadius]), material: "eye" });
    parts.push({ kind: "ellipsoid", centre: onHead(side, -0.02, -0.05), axes: scaleColumns(head, [0.25 * rx, 0.35 * ry, 0.3 * rz]), material: "skin" });
  }
  parts.push({ kind: "ellipsoid", centre: onHead(0, -0.2, 0.97), axes: scaleColumns(head, [0.16 * rx, 0.2 * ry, 0.14 * rz]), material: "nose" });
  const face = {
    nose: onHead(0, -0.2, 1.06),
    leftEye: onHead(0.36, 0.12, 0.93),
    rightEye: onHead(-0.36, 0.12, 0.93),
    leftEar: onHead(1.02, 0, -0.05),
    rightEar: onHead(-1.02, 0, -0.05),
  };

  // Arms: the shoulder rotation sets the upper arm; the elbow bends within the plane the twist selects.
  const arm = (side: 1 | -1, angles: LimbAngles, shoulder: Vec3): { elbow: Vec3; wrist: Vec3 } => {
    const frame = multiply(multiply(multiply(torso, rotationX(-angles.flex * DEG)), rotationZ(side * angles.abduct * DEG)), rotationY(side * angles.twist * DEG));
    const upper = transform(frame, [0, -1, 0]);
    const bend = angles.bend * DEG;
    const lower = transform(frame, [0, -Math.cos(bend), Math.sin(bend)]);
    const elbow = addScaled(shoulder, upper, shape.upperArm);
    const wrist = addScaled(elbow, lower, shape.forearm);
    parts.push({ kind: "capsule", a: shoulder, b: elbow, radius: r.upperArm, material: "shirt" });
    parts.push({ kind: "capsule", a: elbow, b: wrist, radius: r.forearm, material: shape.longSleeves ? "sleeve" : "skin" });
    parts.push({ kind: "capsule", a: wrist, b: addScaled(wrist, lower, shape.hand * 0.75), radius: r.hand, material: "skin" });
    return { elbow, wrist };
  };
  const leftArm = arm(1, pose.leftArm, shoulders.left);
  const rightArm = arm(-1, pose.rightArm, shoulders.right);

  // Legs: the knee bends backwards; the foot stays level, pointing where the hip turns it.
  const leg = (side: 1 | -1, angles: LimbAngles, hip: Vec3): { knee: Vec3; ankle: Vec3; sole: [Vec3, Vec3] } => {
    const frame = multiply(multiply(multiply(pelvis, rotationX(-angles.flex * DEG)), rotationZ(side * angles.abduct * DEG)), rotationY(side * angles.twist * DEG));
    const bend = angles.bend * DEG;
    const knee = addScaled(hip, transform(frame, [0, -1, 0]), shape.thigh);
    const ankle = addScaled(knee, transform(frame, [0, -Math.cos(bend), -Math.sin(bend)]), shape.shank);
    const forward = transform(multiply(pelvis, rotationY(side * angles.twist * DEG)), [0, 0, 1]);
    const heel = add(ankle, [0, -0.6 * shape.ankleHeight, 0]);
    const toe = addScaled(heel, forward, shape.foot * 0.8);
    parts.push({ kind: "capsule", a: hip, b: knee, radius: r.thigh, material: "trousers" });
    parts.push({ kind: "capsule", a: knee, b: ankle, radius: r.shank, material: shape.longTrousers ? "trousers" : "shin" });
    parts.push({ kind: "capsule", a: addScaled(heel, forward, -0.02), b: toe, radius: r.foot, material: "shoe" });
    return { knee, ankle, sole: [heel, toe] };
  };
  const leftLeg = leg(1, pose.leftLeg, hips.left);
  const rightLeg = leg(-1, pose.rightLeg, hips.right);

  const joints: Vec3[] = [
    face.nose,
    face.leftEye,
    face.rightEye,
    face.leftEar,
    face.rightEar,
    shoulders.left,
    shoulders.right,
    leftArm.elbow,
    rightArm.elbow,
    leftArm.wrist,
    rightArm.wrist,
    hips.left,
    hips.right,
    leftLeg.knee,
    rightLeg.knee,
    leftLeg.ankle,
    rightLeg.ankle,
  ];
  const faceTolerance = 0.03;
  const depthTolerance = [
    ...Array<number>(5).fill(faceTolerance),
    r.torso + 0.02,
    r.torso + 0.02,
    r.upperArm + 0.02,
    r.upperArm + 0.02,
    r.forearm + 0.02,
    r.forearm + 0.02,
    r.torso + 0.02,
    r.torso + 0.02,
    r.thigh + 0.02,
    r.thigh + 0.02,
    r.shank + 0.02,
    r.shank + 0.02,
  ];

  // Stand on the ground: shift everything up so the lowest sole touches y = 0.
  const lowest = Math.min(...[...leftLeg.sole, ...rightLeg.sole].map((p) => p[1])) - r.foot;
  const lift: Vec3 = [0, -lowest, 0];
  return {
    joints: joints.map((p) => add(p, lift)),
    depthTolerance,
    parts: parts.map((part) => translatePart(part, lift)),
  };
}

function translatePart(part: BodyPart, by: Vec3): BodyPart {
  switch (part.kind) {
    case "capsule":
      return { ...part, a: add(part.a, by), b: add(part.b, by) };
    case "ellipsoid":
      return { ...part, centre: add(part.centre, by) };
    case "solid":
      return {
        ...part,
        planes: part.planes.map(({ normal, offset }) => ({ normal, offset: offset + normal[0] * by[0] + normal[1] * by[1] + normal[2] * by[2] })),
        corners: part.corners.map((corner) => add(corner, by)),
      };
  }
}
