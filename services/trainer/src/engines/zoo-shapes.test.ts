import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The Python engine's tests check its zoo against a list of libs/train's parameter names and shapes, kept as a
// file so they run without Node. A change to libs/train's zoo must regenerate it, or those tests would check
// the Python zoo against a zoo that no longer exists.
describe("services/trainer/pytorch/tests/fixtures/zoo-shapes.json", () => {
  it("is what its generator writes from libs/train's zoo today", () => {
    const generator = fileURLToPath(new URL("../../pytorch/tests/fixtures/zoo_shapes.mjs", import.meta.url));
    const committed = readFileSync(fileURLToPath(new URL("../../pytorch/tests/fixtures/zoo-shapes.json", import.meta.url)), "utf8");
    const fresh = execFileSync(process.execPath, ["--conditions=@poseloop/source", "--import", "tsx", generator], { encoding: "utf8", maxBuffer: 16 << 20 });
    expect(fresh === committed, "zoo-shapes.json is out of date: regenerate it with the command in zoo_shapes.mjs").toBe(true);
  });
});
