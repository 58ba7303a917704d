import { AppError, Code, SeededRandom } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { renderSyntheticScene, type SyntheticPerson } from "./synthetic-scene.js";

const flags = (person: SyntheticPerson): number[] => person.keypoints.filter((_, i) => i % 3 === 2);
const LEFT_SHOULDER = 5;
const RIGHT_SHOULDER = 6;
const LEFT_HIP = 11;
const RIGHT_HIP = 12;

describe("renderSyntheticScene", () => {
  it("hides joints under occluders as v = 1 and changes nothing else about the people", () => {
    let hidden = 0;
    for (let i = 0; i < 40; i++) {
      const base = { width: 192, height: 256, maxPeople: 2, blur: 0, noise: 0 };
      const clear = renderSyntheticScene(new SeededRandom(21, i), { ...base, occlusion: 0 });
      const covered = renderSyntheticScene(new SeededRandom(21, i), { ...base, occlusion: 1 });
      // Occluders may hide a person completely; everyone still shown keeps their keypoints and labels.
      for (const person of covered.people) {
        const same = clear.people.find((candidate) => candidate.yaw === person.yaw && candidate.poseKind === person.poseKind);
        expect(same).toBeDefined();
        expect(person.numKeypoints).toBe(same!.numKeypoints);
        const before = flags(same!);
        flags(person).forEach((v, j) => {
          expect(person.keypoints[3 * j]).toBe(same!.keypoints[3 * j]);
          if (v !== before[j]) {
            expect([before[j], v]).toEqual([2, 1]);
            hidden++;
          }
        });
        expect(person.area).toBeLessThanOrEqual(same!.area);
      }
    }
    expect(hidden).toBeGreaterThan(40);
  });

  it("marks the far shoulder and hip of a side view as occluded by the body itself", () => {
    const tally = { side: 0, nearShoulderSeen: 0, farShoulderHidden: 0, farHipHidden: 0, front: 0, frontShouldersSeen: 0, frontHipsSeen: 0 };
    for (let i = 0; i < 160; i++) {
      const scene = renderSyntheticScene(new SeededRandom(5, i), { width: 192, height: 256, maxPeople: 1, occlusion: 0, poseKinds: ["standing"] });
      for (const person of scene.people) {
        const v = flags(person);
        if (![LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP].every((j) => v[j] !== 0)) continue;
        if (Math.abs(Math.abs(person.yaw) - 90) < 12) {
          // Yaw +90 turns the person's left side towards the camera. (The near hip is often behind the
          // hanging arm, so only the near shoulder is expected in sight.)
          const left = person.yaw > 0;
          tally.side++;
          if (v[left ? LEFT_SHOULDER : RIGHT_SHOULDER] === 2) tally.nearShoulderSeen++;
          if (v[left ? RIGHT_SHOULDER : LEFT_SHOULDER] === 1) tally.farShoulderHidden++;
          if (v[left ? RIGHT_HIP : LEFT_HIP] === 1) tally.farHipHidden++;
        } else if (Math.abs(person.yaw) < 20) {
          // Facing the camera, both shoulders show; a hip may hide behind a hanging hand.
          tally.front++;
          if (v[LEFT_SHOULDER] === 2 && v[RIGHT_SHOULDER] === 2) tally.frontShouldersSeen++;
          if (v[LEFT_HIP] === 2 && v[RIGHT_HIP] === 2) tally.frontHipsSeen++;
        }
      }
    }
    expect(tally.side).toBeGreaterThan(10);
    expect(tally.front).toBeGreaterThan(10);
    expect(tally.nearShoulderSeen / tally.side).toBeGreaterThan(0.9);
    expect(tally.farShoulderHidden / tally.side).toBeGreaterThan(0.8);
    expect(tally.farHipHidden / tally.side).toBeGreaterThan(0.8);
    expect(tally.frontShouldersSeen / tally.front).toBeGreaterThan(0.9);
    expect(tally.frontHipsSeen / tally.front).toBeGreaterThan(0.75);
  });

  it("renders any picture size with keypoints inside it", () => {
    const scene = renderSyntheticScene(new SeededRandom(3), { width: 640, height: 480, minPeople: 4, maxPeople: 4 });
    expect([scene.image.width, scene.image.height, scene.image.data.length]).toEqual([640, 480, 640 * 480 * 3]);
    expect(scene.people.length).toBeGreaterThan(0);
    for (const person of scene.people) {
      for (let j = 0; j < 17; j++) {
        const [x, y, v] = person.keypoints.slice(3 * j, 3 * j + 3) as [number, number, number];
        if (v > 0) expect(x >= 0 && x < 640 && y >= 0 && y < 480).toBe(true);
      }
    }
  });

  it("draws from the requested pose kinds only, and checks its options", () => {
    const kinds = new Set<string>();
    for (let i = 0; i < 20; i++) {
      for (const person of renderSyntheticScene(new SeededRandom(1, i), { width: 64, height: 96, poseKinds: ["walking", "crouching"] }).people) kinds.add(person.poseKind);
    }
    expect([...kinds].sort()).toEqual(["crouching", "walking"]);
    let error: unknown;
    try {
      renderSyntheticScene(new SeededRandom(1), { width: 8, height: 96, minPeople: 3, maxPeople: 2, blur: -1, poseKinds: ["flying" as "walking"] });
    } catch (caught) {
      error = caught;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toHaveLength(4);
  });

  it("stands crowdDepth's people behind an earlier one: smaller, higher up, partly hidden by the nearer", () => {
    // Two people, the second always in the crowd and always behind: its box is shorter and ends higher up
    // (without crowdDepth, beside each other, 9 of these 30 pictures happen to look so), and it is the one hidden.
    let behind = 0;
    let hidden = 0;
    for (let i = 0; i < 30; i++) {
      const options = { width: 256, height: 192, minPeople: 2, maxPeople: 2, crowd: 1, personHeight: [0.5, 0.9] as const, noise: 0 };
      const { people } = renderSyntheticScene(new SeededRandom(8, i), { ...options, crowdDepth: 1 });
      if (people.length < 2) continue;
      const [far, near] = [...people].sort((a, b) => a.bbox[1] + a.bbox[3] - (b.bbox[1] + b.bbox[3])) as [SyntheticPerson, SyntheticPerson];
      if (far.bbox[3] < near.bbox[3] && far.bbox[1] + far.bbox[3] < near.bbox[1] + near.bbox[3]) behind++;
      if (flags(far).filter((v) => v === 1).length > flags(near).filter((v) => v === 1).length) hidden++;
    }
    expect(behind).toBeGreaterThanOrEqual(25);
    expect(hidden).toBeGreaterThanOrEqual(10);
    expect(() => renderSyntheticScene(new SeededRandom(1), { width: 64, height: 96, crowdDepth: 2 })).toThrow(/crowdDepth is a probability/);
  });
});
