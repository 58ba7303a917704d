import { AppError, Code } from "@poseloop/core";
import type { FrameJob, FrameOutcome, ServingSpec } from "@poseloop/estimator";
import { createRgbImage, fillCapsule, fillCircle, type RgbImage } from "@poseloop/vision";

/**
 * A deterministic picture of a person (head, torso, limbs) on a textured background, twice the model's input
 * size. A blank input can hide what real frames expose: a NaN that only appears on non-zero activations, or a
 * model that computes nothing on anything but zeros.
 */
export function warmUpImage(spec: Pick<ServingSpec, "inputWidth" | "inputHeight">): RgbImage {
  const width = spec.inputWidth * 2;
  const height = spec.inputHeight * 2;
  const image = createRgbImage(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 3 * (y * width + x);
      image.data[i] = (40 + ((x * 7 + y * 3) % 50)) & 0xff;
      image.data[i + 1] = (90 + Math.round(40 * Math.sin(x / 5) * Math.cos(y / 7))) & 0xff;
      image.data[i + 2] = (60 + ((x ^ y) % 40)) & 0xff;
    }
  }
  const u = width / 12;
  const v = height / 16;
  const skin = [230, 190, 160] as const;
  const shirt = [200, 40, 40] as const;
  const trousers = [30, 40, 150] as const;
  fillCircle(image, 6 * u, 2.5 * v, 1.2 * u, skin);
  fillCapsule(image, 6 * u, 4 * v, 6 * u, 9 * v, 1.6 * u, shirt);
  fillCapsule(image, 4.6 * u, 4.5 * v, 3 * u, 7 * v, 0.5 * u, shirt);
  fillCapsule(image, 3 * u, 7 * v, 2.5 * u, 9.5 * v, 0.45 * u, skin);
  fillCapsule(image, 7.4 * u, 4.5 * v, 9 * u, 6.5 * v, 0.5 * u, shirt);
  fillCapsule(image, 9 * u, 6.5 * v, 10 * u, 4.5 * v, 0.45 * u, skin);
  fillCapsule(image, 5.3 * u, 9.5 * v, 4.8 * u, 12.5 * v, 0.6 * u, trousers);
  fillCapsule(image, 4.8 * u, 12.5 * v, 4.6 * u, 15 * v, 0.55 * u, trousers);
  fillCapsule(image, 6.7 * u, 9.5 * v, 7.6 * u, 12.5 * v, 0.6 * u, trousers);
  fillCapsule(image, 7.6 * u, 12.5 * v, 8 * u, 15 * v, 0.55 * u, trousers);
  return image;
}

/** `batch` copies of the warm-up picture, each frame one person: one session run of `batch` crops. */
export function warmUpFrames(spec: Pick<ServingSpec, "inputWidth" | "inputHeight">, batch: number): FrameJob[] {
  const image = warmUpImage(spec);
  return Array.from({ length: batch }, () => ({
    image: { kind: "raw" as const, width: image.width, height: image.height, format: "RGB8" as const, stride: 3 * image.width, data: image.data },
    boxes: [],
    flipTest: false,
    minKeypointScore: 0,
    maxPersons: 0,
  }));
}

/**
 * What a client would have got from the warm-up batch, judged: every frame answered with one person whose
 * keypoints are finite. Throws FAILED_PRECONDITION naming the first problem.
 */
export function checkWarmUp(version: string, batch: number, outcomes: readonly FrameOutcome[]): void {
  const fail = (reason: string): never => {
    throw new AppError(Code.FAILED_PRECONDITION, `version ${version} failed its warm-up at batch ${batch} (the largest batch this inferencer sends): ${reason}`);
  };
  if (outcomes.length !== batch) fail(`${outcomes.length} results for ${batch} frames`);
  outcomes.forEach((outcome, i) => {
    if (!outcome.ok) fail(`frame ${i}: ${outcome.message}`);
    else if (outcome.persons.length !== 1) fail(`frame ${i}: ${outcome.persons.length} people for one crop`);
    else if (!(outcome.persons[0]?.keypoints ?? []).every(Number.isFinite)) fail(`frame ${i}: the model's outputs are not finite (NaN or infinite keypoints)`);
  });
}

/** An onnxruntime failure as a reason a client may read: no source paths of the runtime's build. */
export function modelFailureReason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*/g, "")
    .replace(/\S*\/[\w./+-]+:\d+\s*/g, "")
    .replace(/\S*::\S*\s*/g, "")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 300);
}
