import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AppError, Code, sleep } from "@poseloop/core";
import { GrpcServer, type HandlerContext, type MethodsOf, type ServiceImpl } from "@poseloop/grpc";
import { InferenceService, ServingState, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { PromotionDecisionSchema, PromotionMode, PromotionPolicySchema } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import {
  type EvaluateResponseSchema,
  type GetJobResultsResponseSchema,
  type GetTrainerInfoResponseSchema,
  JobEventSchema,
  JobSchema,
  JobState,
  SweepSchema,
  SweepState,
  TrainerService,
  type Job,
  type JobEvent,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/** A call a fake service received: its method, request and headers. */
export interface ReceivedCall {
  readonly method: string;
  readonly request: unknown;
  readonly headers: Readonly<Record<string, string>>;
}

export interface FakeServer {
  readonly address: string;
  readonly calls: ReceivedCall[];
  stop(): Promise<void>;
}

function headersOf(ctx: HandlerContext): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(ctx.metadata.getMap())) headers[key] = String(value);
  return headers;
}

async function serve(register: (server: GrpcServer) => void, port = 0): Promise<{ server: GrpcServer; address: string }> {
  const server = new GrpcServer({ tracing: false });
  register(server);
  const address = await server.listen("127.0.0.1", port);
  return { server, address: `127.0.0.1:${address.port}` };
}

/** What a fake trainer knows and does. Tests fill it and read `calls`. */
export interface FakeTrainerScript {
  /** Jobs by id, in listing order (newest first). */
  jobs?: Job[];
  /** Each job's event log, replayed by WatchJob (sequence numbers are assigned 1, 2, 3...). */
  events?: Record<string, MessageInitShape<typeof JobEventSchema>[]>;
  /** The job StartTraining returns (default: a QUEUED job "job-1"); an AppError is thrown as the status. */
  start?: Job | AppError;
  /** Fails WatchJob with UNAVAILABLE after this many events, once (to test reconnects). */
  dropWatchAfter?: number;
  /** Ends WatchJob normally after this many events, once, as a draining trainer does; the next GetJob says RUNNING. */
  endWatchAfter?: number;
  /** Errors to answer a method with, by method name ("listJobs"). */
  errors?: Record<string, AppError>;
  /** Delay before answering every call, ms. */
  delayMs?: number;
  /** Keeps WatchJob open after the last event, as for a job still running. */
  live?: boolean;
  /** The PublishCheckpoint answer: the manifest's model ref serving after it. */
  serving?: { name: string; version: string };
  /** The GetTrainerInfo answer (default: "fake-trainer" with onnxruntime on the CPU, no others). */
  trainerInfo?: MessageInitShape<typeof GetTrainerInfoResponseSchema>;
  /** GetJobResults answers by job id; a job without one is NOT_FOUND. */
  results?: Record<string, MessageInitShape<typeof GetJobResultsResponseSchema>>;
  /** The Evaluate answer (default: AP 0.5 on "synthetic/val", 8 images, of the version or checkpoint asked for). */
  evaluation?: MessageInitShape<typeof EvaluateResponseSchema>;
  /** Sweeps by id, newest first; StartSweep answers with the first, WatchSweep replays a sweep's updates. */
  sweeps?: MessageInitShape<typeof SweepSchema>[];
  /** WatchSweep's updates by sweep id (default: the sweep as listed, once). */
  sweepUpdates?: Record<string, MessageInitShape<typeof SweepSchema>[]>;
  /** The GetPromotionPolicy answer (default: ALWAYS, never set). */
  policy?: MessageInitShape<typeof PromotionPolicySchema>;
  /** ListPromotionDecisions' answer, newest first. */
  decisions?: MessageInitShape<typeof PromotionDecisionSchema>[];
}

export function fakeJob(init: MessageInitShape<typeof JobSchema>): Job {
  return create(JobSchema, { createdAt: timestampFromMs(Date.UTC(2026, 10, 27, 23, 15)), ...init });
}

/** A TrainerService on 127.0.0.1 that answers from `script` and records every call. */
export async function startFakeTrainer(script: FakeTrainerScript = {}, port = 0): Promise<FakeServer> {
  const calls: ReceivedCall[] = [];
  let dropped = false;
  let ended: "no" | "yes" | "reported" = "no";
  const record = async (method: string, request: unknown, ctx: HandlerContext): Promise<void> => {
    calls.push({ method, request, headers: headersOf(ctx) });
    const error = script.errors?.[method];
    if (script.delayMs !== undefined) await sleep(script.delayMs, ctx.signal);
    if (error !== undefined) throw error;
  };
  const findJob = (jobId: string): Job => {
    const job = script.jobs?.find((candidate) => candidate.jobId === jobId);
    if (job === undefined) throw new AppError(Code.NOT_FOUND, `job ${jobId} not found`);
    return job;
  };
  const findSweep = (sweepId: string): MessageInitShape<typeof SweepSchema> => {
    const sweep = script.sweeps?.find((candidate) => candidate.sweepId === sweepId);
    if (sweep === undefined) throw new AppError(Code.NOT_FOUND, `no sweep ${sweepId}`);
    return sweep;
  };
  const eventsOf = (jobId: string): JobEvent[] =>
    (script.events?.[jobId] ?? []).map((init, i) => create(JobEventSchema, { jobId, sequence: BigInt(i + 1), ...init }));
  const impl: ServiceImpl<MethodsOf<typeof TrainerService>> = {
    async startTraining(request, ctx) {
      await record("startTraining", request, ctx);
      if (script.start instanceof AppError) throw script.start;
      const job = script.start ?? fakeJob({ jobId: "job-1", state: JobState.QUEUED, config: { name: "demo" } });
      return { job, existing: false };
    },
    async *watchJob(request, ctx) {
      await record("watchJob", request, ctx);
      let sent = 0;
      for (const event of eventsOf(request.jobId)) {
        if (event.sequence <= request.afterSequence) continue;
        if (request.skipProgress && event.event.case === "progress") continue;
        if (!dropped && script.dropWatchAfter !== undefined && sent >= script.dropWatchAfter) {
          dropped = true;
          throw new AppError(Code.UNAVAILABLE, "trainer restarting");
        }
        if (ended === "no" && script.endWatchAfter !== undefined && sent >= script.endWatchAfter) {
          ended = "yes";
          return;
        }
        sent++;
        yield { event };
      }
      if (script.live === true) await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
    },
    async getJob(request, ctx) {
      await record("getJob", request, ctx);
      const job = findJob(request.jobId);
      if (ended !== "yes") return { job };
      ended = "reported";
      return { job: { ...job, state: JobState.RUNNING } };
    },
    async listJobs(request, ctx) {
      await record("listJobs", request, ctx);
      const jobs = (script.jobs ?? []).filter((job) => request.states.length === 0 || request.states.includes(job.state));
      return { jobs: request.pageSize > 0 ? jobs.slice(0, request.pageSize) : jobs };
    },
    async cancelJob(request, ctx) {
      await record("cancelJob", request, ctx);
      return { job: { ...findJob(request.jobId), state: JobState.CANCELLING } };
    },
    async resumeJob(request, ctx) {
      await record("resumeJob", request, ctx);
      return { job: { ...findJob(request.jobId), state: JobState.QUEUED, attempt: 2 } };
    },
    async listCheckpoints(request, ctx) {
      await record("listCheckpoints", request, ctx);
      const job = findJob(request.jobId);
      return { checkpoints: job.lastCheckpoint === undefined ? [] : [job.lastCheckpoint] };
    },
    async publishCheckpoint(request, ctx) {
      await record("publishCheckpoint", request, ctx);
      const serving = script.serving ?? { name: "demo", version: "v2" };
      return { serving: { model: serving, architecture: "lite" }, previous: { name: serving.name, version: "v1" } };
    },
    async getJobResults(request, ctx) {
      await record("getJobResults", request, ctx);
      findJob(request.jobId);
      const results = script.results?.[request.jobId];
      if (results === undefined) throw new AppError(Code.NOT_FOUND, `job ${request.jobId} has no results yet`);
      return results;
    },
    async evaluate(request, ctx) {
      await record("evaluate", request, ctx);
      if (script.evaluation !== undefined) return script.evaluation;
      const model = request.model;
      return {
        metrics: { ap: 0.5, ap50: 0.75, ap75: 0.5, apMedium: -1, apLarge: 0.5, ar: 0.6, ar50: 0.8, ar75: 0.6, arMedium: -1, arLarge: 0.6, dataset: "synthetic/val", numImages: 8, numInstances: 12 },
        ...(model.case === "version" ? { version: { name: model.value.name, version: model.value.version || "v2", digest: "sha256:0" } } : {}),
        ...(model.case === "checkpoint" ? { checkpoint: { jobId: model.value.jobId, checkpointId: model.value.checkpointId || "e0002-s0000020" } } : {}),
        precision: model.case === "version" ? 3 : 1,
        modelDigest: "sha256:0",
        jobId: model.case === "checkpoint" ? model.value.jobId : "job-1",
        seconds: 1.5,
      };
    },
    async startSweep(request, ctx) {
      await record("startSweep", request, ctx);
      return { sweep: create(SweepSchema, script.sweeps?.[0] ?? { sweepId: "sweep-20261127-231500-000001", state: SweepState.RUNNING, bestTrial: -1 }) };
    },
    async getSweep(request, ctx) {
      await record("getSweep", request, ctx);
      return { sweep: create(SweepSchema, findSweep(request.sweepId)) };
    },
    async listSweeps(request, ctx) {
      await record("listSweeps", request, ctx);
      return { sweeps: (script.sweeps ?? []).map((sweep) => create(SweepSchema, sweep)) };
    },
    async *watchSweep(request, ctx) {
      await record("watchSweep", request, ctx);
      for (const sweep of script.sweepUpdates?.[request.sweepId] ?? [findSweep(request.sweepId)]) yield { sweep: create(SweepSchema, sweep) };
    },
    async cancelSweep(request, ctx) {
      await record("cancelSweep", request, ctx);
      return { sweep: create(SweepSchema, { ...findSweep(request.sweepId), state: SweepState.CANCELLED }) };
    },
    async getPromotionPolicy(request, ctx) {
      await record("getPromotionPolicy", request, ctx);
      return { policy: script.policy ?? { mode: PromotionMode.ALWAYS }, isDefault: script.policy === undefined };
    },
    async setPromotionPolicy(request, ctx) {
      await record("setPromotionPolicy", request, ctx);
      const policy = create(PromotionPolicySchema, request.policy ?? {});
      policy.setBy = "token:fake";
      return { policy };
    },
    async listPromotionDecisions(request, ctx) {
      await record("listPromotionDecisions", request, ctx);
      return { decisions: (script.decisions ?? []).map((decision) => create(PromotionDecisionSchema, decision)) };
    },
    async importModel(request, ctx) {
      await record("importModel", request, ctx);
      return { manifest: { model: { name: request.modelName, version: "imported-1" }, architecture: "foreign" }, promoted: !request.skipPromotion };
    },
    async exportModel(request, ctx) {
      await record("exportModel", request, ctx);
      const name = request.version?.name ?? "";
      return { version: { name, version: request.version?.version || "v1" }, model: new TextEncoder().encode(`onnx of ${name}`), manifestYaml: "kind: pose\n" };
    },
    async getTrainerInfo(request, ctx) {
      await record("getTrainerInfo", request, ctx);
      if (script.trainerInfo !== undefined) return script.trainerInfo;
      return { trainer: { workerId: "fake-trainer", maxConcurrentJobs: 1, placements: ["onnxruntime-cpu"], engines: [{ name: "onnxruntime", available: true, devices: ["cpu"] }] }, others: [] };
    },
  };
  const { server, address } = await serve((s) => s.register(TrainerService, impl), port);
  return { address, calls, stop: async () => server.forceShutdown() };
}

export interface FakeInferencerScript {
  /** The version that answers frame n (1-based); default "v1" for all. */
  versionFor?: (frame: number) => string;
  /** Time each frame takes, ms. */
  frameDelayMs?: number;
  /** Frames that fail with INVALID_ARGUMENT in their result. */
  failFrames?: readonly number[];
  /** Sees every frame the server reads (back-pressure tests, what was sent). */
  onFrameRead?: (frame: Frame) => void;
}

/** 17 keypoints of a stick figure standing in the middle of a width × height frame. */
export function standingPerson(width: number, height: number): { x: number; y: number; score: number }[] {
  const cx = width / 2;
  const top = height * 0.15;
  const h = height * 0.7;
  const at = (dx: number, fy: number) => ({ x: cx + dx * h, y: top + fy * h, score: 0.9 });
  return [
    at(0, 0.05), at(-0.02, 0.03), at(0.02, 0.03), at(-0.04, 0.05), at(0.04, 0.05),
    at(-0.1, 0.2), at(0.1, 0.2), at(-0.14, 0.38), at(0.14, 0.38), at(-0.16, 0.52), at(0.16, 0.52),
    at(-0.07, 0.55), at(0.07, 0.55), at(-0.08, 0.77), at(0.08, 0.77), at(-0.08, 0.98), at(0.08, 0.98),
  ];
}

/** An InferenceService on 127.0.0.1 that answers every frame with one standing person. */
export async function startFakeInferencer(script: FakeInferencerScript = {}): Promise<FakeServer> {
  const calls: ReceivedCall[] = [];
  const versionFor = script.versionFor ?? (() => "v1");
  const answer = (frameId: bigint, ptsUs: bigint, width: number, height: number) => {
    const n = Number(frameId);
    const failed = script.failFrames?.includes(n) === true;
    return {
      frameId,
      ptsUs,
      model: { name: "demo", version: versionFor(n), digest: "sha256:0" },
      persons: failed ? [] : [{ bbox: { x: width * 0.3, y: height * 0.1, width: width * 0.4, height: height * 0.8 }, score: 0.9, keypoints: standingPerson(width, height) }],
      imageWidth: width,
      imageHeight: height,
      status: failed ? { code: Code.INVALID_ARGUMENT, message: "corrupt image" } : { code: 0 },
      timings: { totalUs: 1500 },
    };
  };
  const impl: ServiceImpl<MethodsOf<typeof InferenceService>> = {
    async *streamKeypoints(requests, ctx) {
      let first = true;
      for await (const request of requests) {
        if (first) {
          calls.push({ method: "streamKeypoints", request, headers: headersOf(ctx) });
          first = false;
          yield { payload: { case: "accepted", value: { streamId: "s-1", model: { name: "demo", version: versionFor(1) } } } };
          continue;
        }
        if (request.payload.case !== "frame") throw new AppError(Code.INVALID_ARGUMENT, "expected a frame");
        const frame = request.payload.value;
        script.onFrameRead?.(frame);
        if (script.frameDelayMs !== undefined) await sleep(script.frameDelayMs, ctx.signal);
        const raw = frame.image.case === "raw" ? frame.image.value : undefined;
        yield { payload: { case: "result", value: answer(frame.frameId, frame.ptsUs, raw?.width ?? 64, raw?.height ?? 48) } };
      }
    },
    async detectKeypoints(request, ctx) {
      calls.push({ method: "detectKeypoints", request, headers: headersOf(ctx) });
      return { result: answer(request.frame?.frameId ?? 1n, 0n, 64, 48) };
    },
    async getServingModel(request, ctx) {
      calls.push({ method: "getServingModel", request, headers: headersOf(ctx) });
      return {
        state: ServingState.SERVING,
        manifest: { model: { name: "demo", version: "v2" }, architecture: "lite", precision: 3, metrics: { ap: 0.705 }, trainingJobId: "job-1", epoch: 20, step: 1200n },
        loadedAt: timestampFromMs(Date.UTC(2026, 10, 27, 23, 16)),
        previous: [{ name: "demo", version: "v1" }],
      };
    },
    async *watchServingModel(request, ctx) {
      calls.push({ method: "watchServingModel", request, headers: headersOf(ctx) });
      yield { kind: 1, state: ServingState.SERVING, serving: { model: { name: "demo", version: "v1" } } };
      yield { kind: 2, state: ServingState.SERVING, serving: { model: { name: "demo", version: "v1" } }, candidate: { name: "demo", version: "v2" } };
      yield { kind: 3, state: ServingState.SERVING, serving: { model: { name: "demo", version: "v2" } } };
    },
  };
  const { server, address } = await serve((s) => s.register(InferenceService, impl));
  return { address, calls, stop: async () => server.forceShutdown() };
}
