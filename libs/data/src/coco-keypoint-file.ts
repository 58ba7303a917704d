import { AppError, Code } from "@poseloop/core";
import { COCO17, type KeypointSchema } from "@poseloop/pose";
import type { CocoKeypointFile } from "./coco-format.js";

/** At most this many problems are spelled out in the error message; the error's `problems` holds them all. */
const MESSAGE_PROBLEMS = 20;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);
const isInteger = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value);
const isFiniteNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

/**
 * Every problem in a parsed COCO keypoint file (empty when it is valid for `schema`): structure, types, unique
 * and resolvable ids, keypoint counts, visibility flags 0/1/2, num_keypoints, boxes, areas, image file names
 * that stay inside the image folder. Keypoints labelled outside their image are accepted, as COCO tools do.
 */
export function cocoKeypointFileProblems(json: unknown, schema: KeypointSchema = COCO17): string[] {
  if (!isObject(json)) return ["the annotation file must hold a JSON object with images, annotations and categories"];
  const problems: string[] = [];
  const k = schema.names.length;
  const arrayField = (name: string): unknown[] => {
    const value = json[name];
    if (Array.isArray(value)) return value;
    problems.push(`"${name}" must be an array`);
    return [];
  };
  const images = arrayField("images");
  const annotations = arrayField("annotations");
  const categories = arrayField("categories");

  const keypointCategories = new Set<number>();
  const categoryIds = new Set<number>();
  categories.forEach((category, i) => {
    const at = `categories[${i}]`;
    if (!isObject(category)) return void problems.push(`${at} must be an object`);
    if (!isInteger(category["id"])) problems.push(`${at}.id must be an integer`);
    else if (categoryIds.has(category["id"])) problems.push(`${at}.id ${category["id"]} is used twice`);
    else categoryIds.add(category["id"]);
    if (typeof category["name"] !== "string") problems.push(`${at}.name must be a string`);
    const names = category["keypoints"];
    if (names === undefined) return;
    if (!Array.isArray(names) || !names.every((name) => typeof name === "string")) {
      return void problems.push(`${at}.keypoints must be an array of keypoint names`);
    }
    if (names.length !== k) {
      problems.push(`${at} has ${names.length} keypoints; schema ${schema.name} has ${k}`);
    } else {
      const differing = names.findIndex((name, j) => name !== schema.names[j]);
      if (differing >= 0) {
        problems.push(`${at}.keypoints[${differing}] is "${String(names[differing])}"; schema ${schema.name} expects "${schema.names[differing]}"`);
      }
    }
    const skeleton = category["skeleton"];
    if (skeleton !== undefined) {
      const limbOk = (limb: unknown): boolean =>
        Array.isArray(limb) && limb.length === 2 && limb.every((index) => isInteger(index) && index >= 1 && index <= names.length);
      if (!Array.isArray(skeleton)) problems.push(`${at}.skeleton must be an array of [from, to] pairs`);
      else skeleton.forEach((limb, j) => limbOk(limb) || problems.push(`${at}.skeleton[${j}] must be two 1-based keypoint indices`));
    }
    if (isInteger(category["id"])) keypointCategories.add(category["id"]);
  });
  if (categories.length > 0 && keypointCategories.size === 0) problems.push("no category lists keypoints (expected the person category)");

  const imageSizes = new Map<number, { width: number; height: number }>();
  images.forEach((image, i) => {
    const at = `images[${i}]`;
    if (!isObject(image)) return void problems.push(`${at} must be an object`);
    const id = image["id"];
    const idOk = isInteger(id) && id >= 0;
    if (!idOk) problems.push(`${at}.id must be a non-negative integer`);
    else if (imageSizes.has(id)) problems.push(`${at}.id ${id} is used twice`);
    const where = idOk ? `${at} (id ${id})` : at;
    const fileName = image["file_name"];
    if (typeof fileName !== "string" || fileName.length === 0) problems.push(`${where}.file_name must be a non-empty string`);
    else if (!isSafeRelativePath(fileName)) problems.push(`${where}.file_name "${fileName}" must be a relative path inside the image folder`);
    const { width, height } = image;
    const sizeOk = isInteger(width) && isInteger(height) && width > 0 && height > 0;
    if (!sizeOk) problems.push(`${where} width and height must be positive integers`);
    if (idOk && !imageSizes.has(id)) imageSizes.set(id, sizeOk ? { width, height } : { width: 0, height: 0 });
  });

  const annotationIds = new Set<number>();
  annotations.forEach((annotation, i) => {
    const at = `annotations[${i}]`;
    if (!isObject(annotation)) return void problems.push(`${at} must be an object`);
    const id = annotation["id"];
    if (!isInteger(id)) problems.push(`${at}.id must be an integer`);
    else if (annotationIds.has(id)) problems.push(`${at}.id ${id} is used twice`);
    else annotationIds.add(id);
    const where = isInteger(id) ? `${at} (id ${id})` : at;
    const imageId = annotation["image_id"];
    if (!isInteger(imageId)) problems.push(`${where}.image_id must be an integer`);
    else if (!imageSizes.has(imageId)) problems.push(`${where}.image_id ${imageId} names no image`);
    const categoryId = annotation["category_id"];
    if (!isInteger(categoryId)) problems.push(`${where}.category_id must be an integer`);
    else if (!keypointCategories.has(categoryId)) problems.push(`${where}.category_id ${categoryId} is not a keypoint category`);

    const keypoints: unknown = annotation["keypoints"];
    if (!Array.isArray(keypoints) || keypoints.length !== 3 * k) {
      problems.push(`${where}.keypoints must be ${3 * k} numbers ([x, y, v] for ${k} keypoints), got ${describeLength(keypoints)}`);
    } else {
      let labelled = 0;
      const badCoordinates: number[] = [];
      const badFlags: number[] = [];
      for (let j = 0; j < k; j++) {
        const x: unknown = keypoints[3 * j];
        const y: unknown = keypoints[3 * j + 1];
        const v: unknown = keypoints[3 * j + 2];
        if (!isFiniteNumber(x) || !isFiniteNumber(y)) badCoordinates.push(j);
        if (v !== 0 && v !== 1 && v !== 2) badFlags.push(j);
        else if (v > 0) labelled++;
      }
      if (badCoordinates.length > 0) problems.push(`${where}.keypoints: ${names(schema, badCoordinates)} ha${badCoordinates.length === 1 ? "s" : "ve"} non-numeric coordinates`);
      if (badFlags.length > 0) problems.push(`${where}.keypoints: visibility of ${names(schema, badFlags)} must be 0, 1 or 2`);
      const count = annotation["num_keypoints"];
      if (!isInteger(count)) problems.push(`${where}.num_keypoints must be an integer`);
      else if (badFlags.length === 0 && count !== labelled) problems.push(`${where}.num_keypoints is ${count} but ${labelled} keypoints are labelled`);
    }

    const bbox = annotation["bbox"];
    if (!Array.isArray(bbox) || bbox.length !== 4 || !bbox.every(isFiniteNumber)) problems.push(`${where}.bbox must be 4 numbers [x, y, width, height]`);
    else if ((bbox[2] as number) < 0 || (bbox[3] as number) < 0) problems.push(`${where}.bbox has a negative width or height`);
    const area = annotation["area"];
    if (!isFiniteNumber(area) || area < 0) problems.push(`${where}.area must be a non-negative number`);
    const crowd = annotation["iscrowd"];
    if (crowd !== undefined && crowd !== 0 && crowd !== 1) problems.push(`${where}.iscrowd must be 0 or 1`);
  });
  return problems;
}

/**
 * Validates parsed JSON as a COCO keypoint file for `schema`; throws INVALID_ARGUMENT listing every problem
 * (the message names the first ones and the count; `error.problems` holds all). `source` names the file in
 * the message. A missing `iscrowd` is read as 0.
 */
export function parseCocoKeypointFile(json: unknown, schema: KeypointSchema = COCO17, source = "COCO keypoint file"): CocoKeypointFile {
  const problems = cocoKeypointFileProblems(json, schema);
  if (problems.length > 0) throw invalidFile(source, problems);
  const file = json as CocoKeypointFile;
  // Older exports omit iscrowd; the type promises it.
  for (const annotation of file.annotations) (annotation as { iscrowd?: 0 | 1 }).iscrowd ??= 0;
  return file;
}

/** INVALID_ARGUMENT naming the first problems in its message and keeping all of them in `problems`. */
export function invalidFile(source: string, problems: readonly string[]): AppError {
  const shown = problems.slice(0, MESSAGE_PROBLEMS).join("; ");
  const more = problems.length > MESSAGE_PROBLEMS ? `; and ${problems.length - MESSAGE_PROBLEMS} more` : "";
  const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
  return new AppError(Code.INVALID_ARGUMENT, `invalid ${source} (${count}): ${shown}${more}`, { problems });
}

function isSafeRelativePath(path: string): boolean {
  if (path.includes("\0") || path.startsWith("/") || path.includes("\\") || /^[A-Za-z]:/.test(path)) return false;
  return path.split("/").every((segment) => segment !== ".." && segment !== "");
}

function describeLength(value: unknown): string {
  return Array.isArray(value) ? `${value.length}` : typeof value;
}

function names(schema: KeypointSchema, indices: readonly number[]): string {
  return indices.map((j) => schema.names[j] ?? `#${j}`).join(", ");
}
