import { requireAllFinite, requireFinite, requireLength, requireNonNegative } from "./argument-checks.js";
import { boxIou, checkBox, type Box } from "./box.js";
import { COCO17 } from "./keypoint-schema.js";
import { FLOAT64_SPACING_1, oksVariances } from "./oks.js";

/** What the tracker matches people by (the proto's TrackingMetric). */
export type TrackingMetric = "iou" | "oks";

/** Tracker settings (the proto's TrackingOptions; the defaults are its documented ones). */
export interface TrackingOptions {
  /** Default "iou". "oks" needs keypoints. */
  readonly metric?: TrackingMetric;
  /** Minimum similarity for a match, in [0, 1]. Default 0.3. */
  readonly matchThreshold?: number;
  /** Frames a track survives without a match. Default 30. */
  readonly maxAgeFrames?: number;
  /**
   * OKS sigmas for the "oks" metric, one per keypoint of the people's schema (its keypoint count: people with
   * keypoints must have this many). Default: COCO-17's.
   */
  readonly sigmas?: readonly number[];
  /** With "oks", keypoints scoring at or below this in either pose are left out. Default 0. */
  readonly minKeypointScore?: number;
  /**
   * The first track id. Default 1. A tracker that takes over a stream from another (the stream's people now
   * come from a model of another keypoint schema) starts at the other's `nextId`, so no id names two people.
   */
  readonly firstId?: number;
}

/** One person in a frame, in frame pixels. */
export interface TrackablePerson {
  readonly box: Box;
  /** [x, y] × K; needed by the "oks" metric. */
  readonly keypoints?: ArrayLike<number>;
  /** One score per keypoint; without them every keypoint counts. */
  readonly scores?: ArrayLike<number>;
}

interface Track {
  readonly id: number;
  box: Box;
  keypoints: Float64Array | undefined;
  scores: Float64Array | undefined;
  /** Consecutive frames without a match. */
  missed: number;
  /** The box center's motion per frame (x, y), smoothed over the matches; 0 until a second match. */
  vx: number;
  vy: number;
  /** Matched at least once since it started: the velocity is measured. */
  moved: boolean;
}

/**
 * Weight of the newest displacement in a track's velocity: half keeps a walker's steady motion through a
 * detector's frame-to-frame jitter of a few pixels, and still turns within a few frames.
 */
const VELOCITY_GAIN = 0.5;

/**
 * Assigns stable track ids across the frames of one stream: each frame, the pairs (person, live track)
 * whose similarity (box IoU, or OKS with the mean of the two box areas as scale) reaches the threshold are
 * matched greedily, most similar first. A track is compared where it should be now: moved on by its
 * velocity for each frame since it was last seen (SORT's constant-velocity prediction, without its Kalman
 * filter), so a person walking past, or hidden for a few frames by someone crossing, is still where their track
 * looks for them; unmatched people start new tracks, and a track unmatched for more
 * than `maxAgeFrames` frames ends. Ids start at 1 (or `firstId`) and are never reused within a tracker.
 */
export class PoseTracker {
  readonly metric: TrackingMetric;
  readonly matchThreshold: number;
  readonly maxAgeFrames: number;
  readonly #variances: Float64Array;
  readonly #minKeypointScore: number;
  #tracks: Track[] = [];
  #nextId = 1;

  constructor(options: TrackingOptions = {}) {
    this.metric = options.metric ?? "iou";
    if (this.metric !== "iou" && this.metric !== "oks") throw new TypeError(`unknown tracking metric ${String(this.metric)}`);
    this.matchThreshold = options.matchThreshold ?? 0.3;
    requireFinite(this.matchThreshold, "matchThreshold");
    this.maxAgeFrames = options.maxAgeFrames ?? 30;
    if (!(Number.isInteger(this.maxAgeFrames) && this.maxAgeFrames >= 0)) throw new RangeError(`maxAgeFrames must be an integer >= 0, got ${String(this.maxAgeFrames)}`);
    this.#variances = oksVariances(options.sigmas ?? COCO17.sigmas);
    this.#minKeypointScore = options.minKeypointScore ?? 0;
    requireNonNegative(this.#minKeypointScore, "minKeypointScore");
    this.#nextId = options.firstId ?? 1;
    if (!(Number.isSafeInteger(this.#nextId) && this.#nextId >= 1)) throw new RangeError(`firstId must be an integer >= 1, got ${String(options.firstId)}`);
  }

  /** The id the next new track gets. */
  get nextId(): number {
    return this.#nextId;
  }

  /** Track ids for this frame's people, in their order. */
  update(people: readonly TrackablePerson[]): number[] {
    people.forEach((person, i) => this.#check(person, i));
    const candidates: { person: number; track: number; similarity: number }[] = [];
    people.forEach((person, p) => {
      this.#tracks.forEach((track, t) => {
        const similarity = this.metric === "iou" ? boxIou(person.box, predictedBox(track)) : this.#oks(person, track);
        if (similarity >= this.matchThreshold) candidates.push({ person: p, track: t, similarity });
      });
    });
    // Most similar first; on a tie, the track seen more recently, then the older track, then the earlier person.
    candidates.sort(
      (a, b) =>
        b.similarity - a.similarity ||
        (this.#tracks[a.track] as Track).missed - (this.#tracks[b.track] as Track).missed ||
        (this.#tracks[a.track] as Track).id - (this.#tracks[b.track] as Track).id ||
        a.person - b.person,
    );
    const ids = new Array<number>(people.length).fill(0);
    const personTaken = new Uint8Array(people.length);
    const trackTaken = new Uint8Array(this.#tracks.length);
    for (const { person, track } of candidates) {
      if (personTaken[person] === 1 || trackTaken[track] === 1) continue;
      personTaken[person] = 1;
      trackTaken[track] = 1;
      const matched = this.#tracks[track] as Track;
      this.#move(matched, people[person] as TrackablePerson);
      this.#observe(matched, people[person] as TrackablePerson);
      ids[person] = matched.id;
    }
    this.#tracks.forEach((track, t) => {
      if (trackTaken[t] === 0) track.missed++;
    });
    this.#tracks = this.#tracks.filter((track) => track.missed <= this.maxAgeFrames);
    people.forEach((person, p) => {
      if (personTaken[p] === 1) return;
      const track: Track = { id: this.#nextId++, box: person.box, keypoints: undefined, scores: undefined, missed: 0, vx: 0, vy: 0, moved: false };
      this.#observe(track, person);
      this.#tracks.push(track);
      ids[p] = track.id;
    });
    return ids;
  }

  /** Ids of the tracks alive now (matched recently enough to be matched again). */
  get trackIds(): number[] {
    return this.#tracks.map((track) => track.id);
  }

  /** Forgets every track; ids keep counting up. */
  reset(): void {
    this.#tracks = [];
  }

  #check(person: TrackablePerson, i: number): void {
    checkBox(person.box, `people[${i}].box`);
    const k = this.#variances.length;
    if (person.keypoints !== undefined) {
      requireLength(person.keypoints, 2 * k, `people[${i}].keypoints`);
      requireAllFinite(person.keypoints, `people[${i}].keypoints`);
    } else if (this.metric === "oks") {
      throw new TypeError(`people[${i}] has no keypoints, which OKS tracking needs`);
    }
    if (person.scores !== undefined) requireLength(person.scores, k, `people[${i}].scores`);
  }

  /** A match's displacement per frame since the track was last seen, into the track's velocity. */
  #move(track: Track, person: TrackablePerson): void {
    const frames = track.missed + 1;
    const dx = (person.box.x + person.box.width / 2 - (track.box.x + track.box.width / 2)) / frames;
    const dy = (person.box.y + person.box.height / 2 - (track.box.y + track.box.height / 2)) / frames;
    // The first displacement is the velocity; later ones are blended into it.
    const gain = track.moved ? VELOCITY_GAIN : 1;
    track.vx += gain * (dx - track.vx);
    track.vy += gain * (dy - track.vy);
    track.moved = true;
  }

  #observe(track: Track, person: TrackablePerson): void {
    track.box = { x: person.box.x, y: person.box.y, width: person.box.width, height: person.box.height };
    track.keypoints = person.keypoints === undefined ? undefined : Float64Array.from(person.keypoints);
    track.scores = person.scores === undefined ? undefined : Float64Array.from(person.scores);
    track.missed = 0;
  }

  #oks(person: TrackablePerson, track: Track): number {
    const a = person.keypoints;
    const b = track.keypoints;
    if (a === undefined || b === undefined) return 0;
    const ahead = track.missed + 1;
    const [shiftX, shiftY] = [track.vx * ahead, track.vy * ahead];
    const scale = (person.box.width * person.box.height + track.box.width * track.box.height) / 2 + FLOAT64_SPACING_1;
    let sum = 0;
    let n = 0;
    for (let j = 0; j < this.#variances.length; j++) {
      if (person.scores !== undefined && !((person.scores[j] as number) > this.#minKeypointScore)) continue;
      if (track.scores !== undefined && !((track.scores[j] as number) > this.#minKeypointScore)) continue;
      const dx = (a[2 * j] as number) - (b[2 * j] as number) - shiftX;
      const dy = (a[2 * j + 1] as number) - (b[2 * j + 1] as number) - shiftY;
      sum += Math.exp(-((dx * dx + dy * dy) / (this.#variances[j] as number) / scale / 2));
      n++;
    }
    return n === 0 ? 0 : sum / n;
  }
}

/** Where a track's box should be now: its last box moved on by its velocity for each frame since. */
function predictedBox(track: Track): Box {
  const ahead = track.missed + 1;
  return { x: track.box.x + track.vx * ahead, y: track.box.y + track.vy * ahead, width: track.box.width, height: track.box.height };
}
