import { SeededRandom } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { JOINT_LIMITS, PoseKind, poseHumanoid, sampleBodyShape, samplePose } from "./humanoid-model.js";
import type { Vec3 } from "./rotation-3d.js";

const distance = (a: Vec3, b: Vec3): number => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

describe("humanoid model", () => {
  it("keeps limb lengths whatever the pose, and stands on the ground", () => {
    const random = new SeededRandom(5);
    for (let i = 0; i < 200; i++) {
      const shape = sampleBodyShape(random);
      const humanoid = poseHumanoid(shape, samplePose(random));
      const j = humanoid.joints;
      expect(j).toHaveLength(17);
      for (const [shoulder, elbow, wrist] of [
        [5, 7, 9],
        [6, 8, 10],
      ] as const) {
        expect(distance(j[shoulder]!, j[elbow]!)).toBeCloseTo(shape.upperArm, 9);
        expect(distance(j[elbow]!, j[wrist]!)).toBeCloseTo(shape.forearm, 9);
      }
      for (const [hip, knee, ankle] of [
        [11, 13, 15],
        [12, 14, 16],
      ] as const) {
        expect(distance(j[hip]!, j[knee]!)).toBeCloseTo(shape.thigh, 9);
        expect(distance(j[knee]!, j[ankle]!)).toBeCloseTo(shape.shank, 9);
      }
      // Nothing sinks below the ground; the feet rest on it.
      for (const joint of j) expect(joint[1]).toBeGreaterThan(0);
      expect(Math.min(j[15]![1], j[16]![1])).toBeLessThan(0.1);
    }
  });

  it("stands about one height tall with the face in front and the left side on the left", () => {
    const random = new SeededRandom(11);
    const shape = sampleBodyShape(random);
    const upright = poseHumanoid(shape, {
      ...samplePose(random, PoseKind.STANDING),
      torsoLean: 0,
      torsoSide: 0,
      torsoTwist: 0,
      headYaw: 0,
      headPitch: 0,
      headRoll: 0,
    });
    const [nose, leftEye, rightEye, leftEar, rightEar, leftShoulder, rightShoulder] = upright.joints as Vec3[];
    expect(nose![1]).toBeGreaterThan(0.85);
    expect(nose![1]).toBeLessThan(0.97);
    expect(leftShoulder![1]).toBeGreaterThan(0.76);
    expect(leftShoulder![1]).toBeLessThan(0.86);
    // x points to the person's left, z forward.
    expect(leftEye![0]).toBeGreaterThan(rightEye![0]);
    expect(leftEar![0]).toBeGreaterThan(leftEye![0]);
    expect(rightEar![0]).toBeLessThan(rightEye![0]);
    expect(leftShoulder![0]).toBeGreaterThan(0);
    expect(rightShoulder![0]).toBeLessThan(0);
    expect(nose![2]).toBeGreaterThan(leftEar![2]);
  });

  it("keeps every sampled angle within the joint limits", () => {
    const random = new SeededRandom(2);
    const within = (value: number, [min, max]: readonly [number, number]): boolean => value >= min && value <= max;
    for (let i = 0; i < 500; i++) {
      const pose = samplePose(random);
      expect(within(pose.torsoLean, JOINT_LIMITS.torsoLean)).toBe(true);
      expect(within(pose.headYaw, JOINT_LIMITS.headYaw)).toBe(true);
      for (const arm of [pose.leftArm, pose.rightArm]) {
        for (const key of ["flex", "abduct", "twist", "bend"] as const) expect(within(arm[key], JOINT_LIMITS.arm[key])).toBe(true);
      }
      for (const leg of [pose.leftLeg, pose.rightLeg]) {
        for (const key of ["flex", "abduct", "twist", "bend"] as const) expect(within(leg[key], JOINT_LIMITS.leg[key])).toBe(true);
      }
    }
  });

  it("crouches lower than it stands", () => {
    const random = new SeededRandom(8);
    const shape = sampleBodyShape(random);
    const nose = (kind: PoseKind): number => poseHumanoid(shape, samplePose(random, kind)).joints[0]![1];
    expect(nose(PoseKind.CROUCHING)).toBeLessThan(nose(PoseKind.STANDING) - 0.1);
  });
});
