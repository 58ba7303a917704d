import { describe, expect, it } from "vitest";
import { BLAZEPOSE_DEFAULT_SIGMA, BLAZEPOSE33, COCO_WHOLEBODY133, COCO17, flipPermutation, keypointSchemaByName, schemaProblems } from "./keypoint-schema.js";

const index = (schema: { names: readonly string[] }, name: string): number => schema.names.indexOf(name);

describe("keypoint schemas", () => {
  it("are valid, and found by name", () => {
    for (const schema of [COCO17, BLAZEPOSE33, COCO_WHOLEBODY133]) {
      expect(schemaProblems(schema), schema.name).toEqual([]);
      expect(keypointSchemaByName(schema.name)).toBe(schema);
    }
    expect(keypointSchemaByName("coco17")).toBeUndefined();
  });

  it("BlazePose-33: MediaPipe's landmarks and connections, COCO's sigmas where COCO has the landmark", () => {
    expect(BLAZEPOSE33.names).toHaveLength(33);
    expect(BLAZEPOSE33.skeleton).toHaveLength(35);
    expect(BLAZEPOSE33.names[32]).toBe("right_foot_index");
    for (const [i, name] of COCO17.names.entries()) {
      expect(BLAZEPOSE33.sigmas[index(BLAZEPOSE33, name)], name).toBe(COCO17.sigmas[i]);
    }
    expect(BLAZEPOSE33.sigmas[index(BLAZEPOSE33, "left_heel")]).toBe(BLAZEPOSE_DEFAULT_SIGMA);
    // Every left landmark swaps with its right one and nothing else.
    const flip = flipPermutation(BLAZEPOSE33);
    BLAZEPOSE33.names.forEach((name, i) => {
      const mirrored = name.startsWith("left_") ? name.replace("left_", "right_") : name.startsWith("right_") ? name.replace("right_", "left_") : name.replace("_left", "_right").replace(/_right$/, name.endsWith("_right") ? "_left" : "_right");
      expect(BLAZEPOSE33.names[flip[i] as number], name).toBe(name === "nose" ? "nose" : mirrored);
    });
  });

  it("COCO-WholeBody-133: body 17 + feet 6 + face 68 + hands 2x21 with the published sigmas", () => {
    expect(COCO_WHOLEBODY133.names).toHaveLength(133);
    expect(COCO_WHOLEBODY133.names.slice(0, 17)).toEqual(COCO17.names);
    expect(COCO_WHOLEBODY133.names[23]).toBe("face-0");
    expect(COCO_WHOLEBODY133.names[91]).toBe("left_hand_root");
    expect(COCO_WHOLEBODY133.names[132]).toBe("right_pinky_finger4");
    expect(COCO_WHOLEBODY133.sigmas.slice(0, 17)).toEqual(COCO17.sigmas.map((s) => Math.round(s * 1000) / 1000));
    expect(COCO_WHOLEBODY133.sigmas[index(COCO_WHOLEBODY133, "left_heel")]).toBe(0.066);
    expect(COCO_WHOLEBODY133.sigmas[index(COCO_WHOLEBODY133, "face-47")]).toBe(0.034);
    // Hands share their sigmas.
    expect(COCO_WHOLEBODY133.sigmas.slice(91, 112)).toEqual(COCO_WHOLEBODY133.sigmas.slice(112, 133));
    const flip = flipPermutation(COCO_WHOLEBODY133);
    expect(COCO_WHOLEBODY133.names[flip[index(COCO_WHOLEBODY133, "left_ring_finger3")] as number]).toBe("right_ring_finger3");
    expect(COCO_WHOLEBODY133.names[flip[index(COCO_WHOLEBODY133, "face-0")] as number]).toBe("face-16");
    expect(flip[index(COCO_WHOLEBODY133, "face-30")]).toBe(index(COCO_WHOLEBODY133, "face-30"));
    expect(COCO_WHOLEBODY133.skeleton).toHaveLength(19 + 6 + 40);
  });
});
