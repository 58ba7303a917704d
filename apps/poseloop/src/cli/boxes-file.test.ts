import { describe, expect, it } from "vitest";
import { AppError, Code } from "@poseloop/core";
import { parseBoxesJsonl } from "./boxes-file.js";

describe("parseBoxesJsonl", () => {
  it("reads one line per frame, with or without scores, skipping blank lines", () => {
    const boxes = parseBoxesJsonl(['{"frame": 1, "boxes": [[10, 20, 30, 40], [5.5, 6, 7, 8, 0.9]]}', "", '{"frame": 3, "boxes": []}', ""].join("\n"), "b.jsonl");
    expect([...boxes.keys()]).toEqual([1, 3]);
    expect(boxes.get(1)).toEqual([
      { x: 10, y: 20, width: 30, height: 40 },
      { x: 5.5, y: 6, width: 7, height: 8 },
    ]);
    expect(boxes.get(3)).toEqual([]);
    expect(boxes.get(2)).toBeUndefined();
  });

  it("reports every problem at once, each with its line number", () => {
    const text = [
      '{"frame": 1, "boxes": [[0, 0, 10, 10]]}',
      "{frame: 2}",
      '{"frame": 1, "boxes": []}',
      '{"frame": 0, "boxes": [[1, 2, 3]]}',
      '{"frame": 4, "boxes": [[1, 2, 0, 5], [1, 2, 3, 4, 7], ["a", 1, 2, 3]], "score": 1}',
      "[1, 2]",
      '{"frame": 5}',
    ].join("\r\n");
    let error: unknown;
    try {
      parseBoxesJsonl(text, "b.jsonl");
    } catch (caught) {
      error = caught;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = (error as AppError & { details?: { problems?: string[] } }).message;
    expect(problems).toContain("boxes file b.jsonl (10 problems)");
    for (const expected of [
      "line 2: not JSON",
      "line 3: frame 1 again (first on line 1)",
      'line 4: "frame" must be a frame number from 1, got 0',
      "line 4: box 0 must be [x, y, w, h] or [x, y, w, h, score] of finite numbers, got [1,2,3]",
      'line 5: unknown key "score"',
      "line 5: box 0 has width 0 and height 5; both must be above 0",
      "line 5: box 1 has score 7; a score is from 0 to 1",
      'line 5: box 2 must be [x, y, w, h] or [x, y, w, h, score] of finite numbers, got ["a",1,2,3]',
      "line 6: expected an object",
      'line 7: "boxes" must be an array',
    ]) {
      expect(problems).toContain(expected);
    }
  });

  it("lists at most twenty problems of a file wrong throughout", () => {
    const text = Array.from({ length: 30 }, () => "nope").join("\n");
    expect(() => parseBoxesJsonl(text, "b.jsonl")).toThrow(/line 20: not JSON.*and 10 more$/);
  });
});
