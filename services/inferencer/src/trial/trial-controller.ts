import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { context as otelContext, ROOT_CONTEXT, SpanKind, trace, type Link } from "@opentelemetry/api";
import { isTrialMode, policyMode, type CandidateEntry, type ModelRegistry } from "@poseloop/bus";
import { AppError, Code, sleep, type Logger } from "@poseloop/core";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import { ModelRefSchema } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { PromotionMode, PromotionVerdict, type AgreementStatsSchema, type PromotionDecision } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { linkTo, traceContextFromRecord, withSpan } from "@poseloop/telemetry";
import type { BatchScheduler } from "../batch-scheduler.js";
import { followNewest } from "../follow-newest.js";
import type { FrameSettings } from "../frame-conversion.js";
import type { FrameCall, FrameProcessor, PoseJobObserver, ProcessedFrame } from "../frame-processor.js";
import type { ModelManager } from "../model-manager.js";
import type { ServingHandle, VersionSource } from "../serving-handle.js";
import type { StreamRouter } from "../stream-session.js";
import { AgreementWindow, type ModelRun } from "./agreement-window.js";
import { inCanaryShare } from "./canary-share.js";
import { trialInstruments, type TrialInstruments } from "./trial-metrics.js";

type Processor = Pick<FrameProcessor, "process">;

/** A batch scheduler over one version source, and the frame processor that answers clients through it. */
export interface TrialLane {
  readonly scheduler: BatchScheduler;
  readonly processor: FrameProcessor;
}

export interface TrialControllerOptions {
  readonly registry: ModelRegistry;
  readonly models: ModelManager;
  readonly modelName: string;
  readonly logger: Logger;
  /** Who concludes this inferencer's trials, in the decision log (its instance id). */
  readonly decidedBy: string;
  /** The serving model's lane: it answers every frame outside a canary's share. */
  readonly serving: TrialLane;
  /** Builds the candidate's lane over the version source it is given (the trial's candidate while one is loaded). */
  readonly candidateLane: (versions: VersionSource) => TrialLane;
  /**
   * Comparison runs (a frame run by the model that does not answer it) in flight at most. Each worker then holds
   * about one of them beside its live batches: a live frame waits behind at most one copy, what a second model
   * costs, and when live traffic fills the pool the comparison samples fewer frames instead of queueing copies.
   */
  readonly maxCopiesInFlight: number;
  /** How long the serving side has to swap to a promoted candidate, its canary streams kept on it meanwhile. */
  readonly swapTimeoutMs?: number;
  /** How long a trial waits for its baseline to serve here (at start, the serving version may still load). */
  readonly baselineTimeoutMs?: number;
}

export type TrialPhase = "loading" | "running" | "concluding" | "promoting" | "ended";

interface Trial {
  readonly entry: CandidateEntry;
  readonly mode: PromotionMode;
  readonly candidate: string;
  readonly baseline: string;
  readonly fraction: number;
  /** To the span that started the trial (the publication's). */
  readonly link: Link | undefined;
  phase: TrialPhase;
  /** The verdict reached, once concluding: while a promotion is recorded, its canary streams stay on it. */
  promote: boolean;
  handle: ServingHandle | undefined;
  window: AgreementWindow | undefined;
  canary: Processor | undefined;
  timer: NodeJS.Timeout | undefined;
  concluded: Promise<void> | undefined;
  finished: Promise<void> | undefined;
}

/** A model's run of a frame, with the version that ran it. */
type VersionedRun = ModelRun & { readonly version: string };

const tracer = () => trace.getTracer("@poseloop/inferencer");

/**
 * Canary and shadow trials of the served model name: follows its candidate record in the registry, loads the
 * candidate beside the serving version (the same checks as a serving load; a failed load rolls the trial back
 * and leaves the serving version alone), and measures how the two agree on live frames until a verdict.
 *
 * SHADOW: the serving model answers every frame; the candidate runs a copy of each frame it has room for
 * (maxCopiesInFlight) and its outputs go only into the comparison. CANARY: the streams whose key falls in the
 * policy's share (canary-share.ts) are answered by the candidate, each result naming it; the serving model runs
 * a copy of those frames, as room allows, for the comparison. A copy is the answer's own pose job, taken as it
 * leaves for its batch: the same people cropped from the same pixels, the person detector's boxes included (it
 * runs once, for the answer), since OKS between poses of different crops measures the crops, not the models.
 * Copies are all the comparison costs: the answers never wait for them. Every frame the room allows is compared,
 * rather than a fixed sample, since small windows then fill in seconds and the bound on copies already keeps the
 * cost to one model's worth.
 *
 * A verdict (agreement-window.ts) concludes the trial in the registry, in a span linked to the trial's start;
 * of several inferencers measuring the same trial, the first verdict counts. A promoted candidate keeps its
 * canary streams until the serving side has swapped to it, so they never step back to the old version.
 *
 * It is the inferencer's frame processor: `process` is the serving path (with shadow copies) and `forStream`
 * routes a stream's frames while a canary runs.
 */
export class TrialController implements Processor, StreamRouter {
  readonly #options: TrialControllerOptions;
  readonly #controller = new AbortController();
  /** The candidate's version source, for its lane: the trial's candidate while one is loaded. */
  readonly #candidateSource: VersionSource = { acquire: () => this.#trial?.handle, release: () => undefined };
  /**
   * The candidate's lane, only while a candidate is loaded: a lane's scheduler reports its queue to the
   * inferencer's metrics, and an idle one would report beside the serving lane's all the time.
   */
  #candidate: TrialLane | undefined;
  readonly #instruments: TrialInstruments;
  #trial: Trial | undefined;
  #loop: Promise<void> | undefined;
  #copies = 0;
  /** Frames on the candidate's lane not yet back: its version is released only when none is left. */
  #candidatePending = 0;

  constructor(options: TrialControllerOptions) {
    this.#options = options;
    this.#instruments = trialInstruments();
  }

  /** Starts following the candidate record (in the background; retries on bus errors). */
  start(): void {
    this.#loop ??= this.#follow();
  }

  async stop(): Promise<void> {
    this.#controller.abort();
    await this.#loop?.catch(() => undefined);
    const trial = this.#trial;
    if (trial !== undefined) await (trial.concluded ?? this.#finish(trial));
  }

  /** The version on trial and the mode, while one runs. */
  get trial(): { readonly candidate: string; readonly mode: PromotionMode; readonly phase: TrialPhase } | undefined {
    const trial = this.#trial;
    return trial === undefined ? undefined : { candidate: trial.candidate, mode: trial.mode, phase: trial.phase };
  }

  async process(frame: Frame, settings: FrameSettings, call: FrameCall): Promise<ProcessedFrame> {
    const trial = this.#trial;
    const shadow = trial?.mode === PromotionMode.SHADOW ? this.#copier(trial, "candidate", call) : undefined;
    const answered = await this.#options.serving.processor.process(frame, settings, call, shadow?.onPoseJob);
    const copy = shadow?.run();
    if (trial !== undefined && copy !== undefined) void copy.then((run) => this.#compare(trial, runOf(answered), run));
    return answered;
  }

  forStream(streamKey: string): Processor {
    const trial = this.#trial;
    if (trial?.mode !== PromotionMode.CANARY || trial.canary === undefined) return this;
    const routed = trial.phase === "running" || ((trial.phase === "concluding" || trial.phase === "promoting") && trial.promote);
    return routed && inCanaryShare(streamKey, trial.fraction) ? trial.canary : this;
  }

  /** A canary stream's path: the candidate answers, the serving model runs a copy for the comparison. */
  #canaryProcessor(trial: Trial, lane: TrialLane): Processor {
    return {
      process: async (frame, settings, call) => {
        const reference = this.#copier(trial, "serving", call);
        this.#candidatePending++;
        let answered: ProcessedFrame;
        try {
          // The canary lane runs the stream's person source itself (the detector, then the candidate's pose).
          answered = await lane.processor.process(frame, settings, call, reference.onPoseJob);
        } finally {
          this.#candidatePending--;
        }
        const copy = reference.run();
        if (copy !== undefined) void copy.then((run) => this.#compare(trial, run, runOf(answered)));
        return answered;
      },
    };
  }

  /**
   * The copy of one frame for the other model (`role`): `onPoseJob` goes to the answering run, and submits the
   * answer's own pose job (the same crops of the same pixels: the client's boxes, the whole frame, or the boxes
   * the detector found for the answer) to that model's lane as it leaves; `run()` is the copy, undefined when
   * none was made. None is made for a frame that never reached a pose model (invalid, or nobody in it: nothing
   * to compare), or when the trial no longer runs.
   */
  #copier(trial: Trial, role: "serving" | "candidate", call: FrameCall): { readonly onPoseJob: PoseJobObserver; run(): Promise<VersionedRun> | undefined } {
    let copy: Promise<VersionedRun> | undefined;
    return {
      onPoseJob: (job) => {
        if (trial.phase !== "running") return;
        // The histogram is the answer's, for its stream's scene-cut test; the copy has no use for it.
        const { histogram: _answers, ...pose } = job;
        copy = this.#copy(trial, role, pose, call.stream);
      },
      run: () => copy,
    };
  }

  /**
   * Runs a pose job on one model's lane for the comparison only, when there is room (maxCopiesInFlight).
   * Undefined when there is none. Never rejects: a failed run is a failed ModelRun.
   */
  #copy(trial: Trial, role: "serving" | "candidate", job: FrameJob, stream: string | undefined): Promise<VersionedRun> | undefined {
    if (this.#copies >= this.#options.maxCopiesInFlight) return undefined;
    const scheduler = role === "candidate" ? this.#candidate?.scheduler : this.#options.serving.scheduler;
    if (scheduler === undefined) return undefined;
    this.#copies++;
    if (role === "candidate") this.#candidatePending++;
    return scheduler.submit(job, stream).then(
      ({ outcome, handle }) => ({ ok: outcome.ok, persons: outcome.ok ? outcome.persons : [], latencyMs: workerMs(outcome.timings), version: handle.version }),
      () => ({ ok: false, persons: [], latencyMs: 0, version: role === "candidate" ? trial.candidate : trial.baseline }),
    ).finally(() => {
      this.#copies--;
      if (role === "candidate") this.#candidatePending--;
    });
  }

  #compare(trial: Trial, serving: VersionedRun, candidate: VersionedRun): void {
    const window = trial.window;
    if (trial.phase !== "running" || window === undefined) return;
    if (serving.version !== trial.baseline) {
      // The baseline no longer serves here (promoted over by hand, rolled back): the trial measures nothing more
      // and the registry, finding its baseline gone, voids it.
      if (this.#options.models.current?.version !== trial.baseline) this.#conclude(trial, false, `its baseline ${trial.baseline} no longer serves`);
      return;
    }
    if (candidate.version !== trial.candidate) return;
    if (!window.add({ serving, candidate })) return;
    const model = this.#options.modelName;
    this.#instruments.frames.add(1, { model, role: "candidate" });
    this.#instruments.frames.add(1, { model, role: "serving" });
    this.#instruments.meanOks.record(window.meanOks, { model });
    const decision = window.decision();
    if (decision !== undefined) this.#conclude(trial, decision.promote, decision.reason);
  }

  async #follow(): Promise<void> {
    const { registry, modelName, logger } = this.#options;
    await followNewest(
      (signal) => registry.watchCandidate(modelName, signal),
      (entry) => this.#onRecord(entry).catch((error: unknown) => logger.error("handling a candidate record failed", { model: modelName, err: error })),
      {
        signal: this.#controller.signal,
        onWatchError: (error, retryMs) => logger.warn("watching the candidate version failed; retrying", { model: modelName, err: error, retry_ms: retryMs }),
      },
    );
  }

  async #onRecord(entry: CandidateEntry): Promise<void> {
    const current = this.#trial;
    if (current !== undefined) {
      if (current.entry.revision === entry.revision) return;
      // Concluded (by this inferencer or another), or superseded by a newer publication.
      await (current.concluded ?? this.#finish(current));
    }
    if ((entry.record.model?.version ?? "") === "") return;
    await this.#begin(entry);
  }

  async #begin(entry: CandidateEntry): Promise<void> {
    const { models, modelName, logger } = this.#options;
    const signal = this.#controller.signal;
    const { record } = entry;
    const policy = record.policy;
    const mode = policyMode(policy);
    if (policy === undefined || !isTrialMode(mode)) {
      logger.warn("ignoring a candidate record whose policy runs no trial", { model: modelName, candidate: record.model?.version, mode: PromotionMode[mode] });
      return;
    }
    const trial: Trial = {
      entry,
      mode,
      candidate: record.model?.version ?? "",
      baseline: record.baseline?.version ?? "",
      fraction: policy.canaryFraction,
      link: linkTo(traceContextFromRecord(record.traceContext, otelContext.active())),
      phase: "loading",
      promote: false,
      handle: undefined,
      window: undefined,
      canary: undefined,
      timer: undefined,
      concluded: undefined,
      finished: undefined,
    };
    this.#trial = trial;
    logger.info("trial started", { model: modelName, mode: PromotionMode[mode], candidate: trial.candidate, baseline: trial.baseline, window_frames: policy.windowFrames });
    if (policy.maxTrialSeconds > 0) {
      // From the trial's start in the registry, so that every inferencer measuring it gives up at the same time.
      const since = record.since === undefined ? Date.now() : timestampMs(record.since);
      trial.timer = setTimeout(() => {
        const frames = trial.window?.frames ?? 0;
        this.#conclude(trial, false, `only ${frames} of ${policy.windowFrames} frames compared within max_trial_seconds ${policy.maxTrialSeconds}`);
      }, Math.max(0, since + policy.maxTrialSeconds * 1000 - Date.now()));
      trial.timer.unref();
    }
    let handle: ServingHandle;
    try {
      handle = await withSpan(
        tracer(),
        "trial.load",
        { kind: SpanKind.CONSUMER, parent: ROOT_CONTEXT, links: trial.link === undefined ? [] : [trial.link], attributes: { "poseloop.model.name": modelName, "poseloop.model.version": trial.candidate, "poseloop.promotion.mode": PromotionMode[mode] } },
        async () => {
          await this.#baselineServing(trial);
          return models.loadVersion(record.model ?? create(ModelRefSchema, { version: trial.candidate }), trial.link, signal);
        },
      );
    } catch (error) {
      if (signal.aborted) return;
      this.#conclude(trial, false, `the candidate ${trial.candidate} did not load: ${AppError.from(error).message}`);
      return;
    }
    if (trial.phase !== "loading") {
      // Ended while it loaded (its deadline passed, or the inferencer stops).
      await models.unloadVersion(handle);
      return;
    }
    trial.handle = handle;
    // The serving version's: the manager loads a candidate only with the serving keypoint count.
    const sigmas = models.current?.spec.oksSigmas;
    if (sigmas === undefined) {
      this.#conclude(trial, false, `the serving version ${trial.baseline} names no OKS sigmas for its ${handle.spec.numKeypoints} keypoints: agreement cannot be measured`);
      return;
    }
    trial.window = new AgreementWindow({ windowFrames: policy.windowFrames, minMeanOks: policy.minMeanOks, maxFailureRate: policy.maxFailureRate, maxLatencyRatio: policy.maxLatencyRatio }, sigmas);
    this.#candidate = this.#options.candidateLane(this.#candidateSource);
    trial.canary = this.#canaryProcessor(trial, this.#candidate);
    trial.phase = "running";
  }

  /** Waits for the trial's baseline to serve here: at start, or just after a swap, it may still be loading. */
  async #baselineServing(trial: Trial): Promise<void> {
    const deadline = Date.now() + (this.#options.baselineTimeoutMs ?? 30_000);
    for (;;) {
      const serving = this.#options.models.current?.version;
      if (serving === trial.baseline) return;
      if (Date.now() > deadline || trial.phase !== "loading") {
        throw new AppError(Code.FAILED_PRECONDITION, `its baseline ${trial.baseline} does not serve on this inferencer (${serving ?? "nothing"} does)`);
      }
      await sleep(50, this.#controller.signal);
    }
  }

  /** Reaches a verdict once: records it in the registry, then (promoted) waits for the swap, then ends the trial. */
  #conclude(trial: Trial, promote: boolean, reason: string): void {
    if (trial.phase !== "running" && trial.phase !== "loading") return;
    trial.phase = "concluding";
    trial.promote = promote;
    clearTimeout(trial.timer);
    const agreement = trial.window?.stats() ?? { frames: 0n };
    trial.concluded = (async () => {
      const decision = await this.#record(trial, promote, reason, agreement);
      if (decision?.verdict === PromotionVerdict.PROMOTED) {
        trial.phase = "promoting";
        await this.#swappedTo(trial.candidate);
      }
      await this.#finish(trial);
    })();
  }

  /**
   * concludeTrial in a span of its own (the registry's decision span inside it), a new trace linked to the
   * span that started the trial: a verdict is reached on some frame's callback, and belongs to no frame.
   * Undefined when another inferencer decided first, the trial was replaced, or the registry could not be
   * reached (logged; the trial stays open there for another inferencer or a restart to decide).
   */
  async #record(trial: Trial, promote: boolean, reason: string, agreement: MessageInitShape<typeof AgreementStatsSchema>): Promise<PromotionDecision | undefined> {
    const { registry, modelName, logger, decidedBy } = this.#options;
    const verdict = promote ? PromotionVerdict.PROMOTED : PromotionVerdict.ROLLED_BACK;
    const attributes = {
      "poseloop.model.name": modelName,
      "poseloop.promotion.mode": PromotionMode[trial.mode],
      "poseloop.promotion.candidate": trial.candidate,
      "poseloop.promotion.serving": trial.baseline,
      "poseloop.promotion.verdict": PromotionVerdict[verdict],
      "poseloop.trial.frames": Number(agreement.frames ?? 0n),
      "poseloop.trial.mean_oks": agreement.meanOks ?? 0,
    };
    try {
      return await withSpan(tracer(), "trial.verdict", { kind: SpanKind.INTERNAL, parent: ROOT_CONTEXT, links: trial.link === undefined ? [] : [trial.link], attributes }, async (span) => {
        for (let attempt = 1; ; attempt++) {
          try {
            const decision = await registry.concludeTrial(modelName, trial.entry.revision, { verdict, reason, decidedBy, agreement });
            span.setAttribute("poseloop.promotion.decided", decision !== undefined);
            logger.info(decision === undefined ? "trial verdict not needed: the trial was already decided or replaced" : "trial concluded", {
              model: modelName,
              candidate: trial.candidate,
              baseline: trial.baseline,
              verdict: PromotionVerdict[verdict],
              reason,
              mean_oks: agreement.meanOks,
            });
            return decision;
          } catch (error) {
            if (attempt >= 3 || this.#controller.signal.aborted) throw error;
            await sleep(250 * attempt, this.#controller.signal);
          }
        }
      });
    } catch (error) {
      logger.error("the trial's verdict could not be recorded", { model: modelName, candidate: trial.candidate, verdict: PromotionVerdict[verdict], err: error });
      return undefined;
    }
  }

  async #swappedTo(version: string): Promise<void> {
    const deadline = Date.now() + (this.#options.swapTimeoutMs ?? 60_000);
    while (this.#options.models.current?.version !== version && Date.now() < deadline) {
      const stopped = await sleep(20, this.#controller.signal).then(() => false, () => true);
      if (stopped) return;
    }
  }

  /** Stops routing to the candidate, waits for its frames still out, and releases it. Idempotent. */
  #finish(trial: Trial): Promise<void> {
    trial.finished ??= (async () => {
      trial.phase = "ended";
      clearTimeout(trial.timer);
      while (this.#candidatePending > 0) await sleep(10);
      this.#candidate?.scheduler.close();
      this.#candidate = undefined;
      if (trial.handle !== undefined) await this.#options.models.unloadVersion(trial.handle);
      if (this.#trial === trial) this.#trial = undefined;
      this.#options.logger.info("trial ended", { model: this.#options.modelName, candidate: trial.candidate });
    })();
    return trial.finished;
  }
}

/** The run of the frame as answered (FrameProcessor's result). */
function runOf(processed: ProcessedFrame): VersionedRun {
  const t = processed.result.timings;
  const us = (t?.decodeUs ?? 0) + (t?.preprocessUs ?? 0) + (t?.inferenceUs ?? 0) + (t?.postprocessUs ?? 0);
  return { ok: processed.ok, persons: processed.estimates, latencyMs: us / 1000, version: processed.result.model?.version ?? "" };
}

function workerMs(timings: FrameOutcome["timings"]): number {
  return (timings.decodeUs + timings.preprocessUs + timings.inferenceUs + timings.postprocessUs) / 1000;
}
