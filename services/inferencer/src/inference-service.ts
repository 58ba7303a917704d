import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { context as otelContext } from "@opentelemetry/api";
import { AppError, Code, type Logger } from "@poseloop/core";
import type { MethodsOf, ServiceImpl } from "@poseloop/grpc";
import { FrameResultSchema, type InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import type { InferenceLimits } from "./config.js";
import { personsInit } from "./frame-conversion.js";
import type { FrameProcessor } from "./frame-processor.js";
import { activeStreamsCounter } from "./metrics.js";
import type { DetectorServingSpec } from "./detector-spec.js";
import type { ModelManager } from "./model-manager.js";
import { personSourceProblems, resolvePersonSource, type DetectorAvailability } from "./person-source.js";
import { runStream } from "./stream-session.js";

export interface InferenceServiceDependencies {
  readonly processor: Pick<FrameProcessor, "process">;
  readonly models: ModelManager;
  readonly limits: InferenceLimits;
  readonly defaultModel: string;
  readonly logger: Logger;
  /** The person detector (POSELOOP_DETECTOR_MODEL), when the inferencer runs one. */
  readonly detector?: DetectorAvailability;
  /** The person detector's versions: GetServingModel and WatchServingModel answer for its name too. */
  readonly detectorModels?: Pick<ModelManager<DetectorServingSpec>, "current" | "state" | "previous" | "events">;
}

/** InferenceService: streams, single images, and the serving model's state and changes. */
export function inferenceService(deps: InferenceServiceDependencies): ServiceImpl<MethodsOf<typeof InferenceService>> {
  let streams = 0;
  const activeStreams = activeStreamsCounter();
  /** Open streams by client host. */
  const streamsByHost = new Map<string, number>();
  /** The versions of the pose model, or of the person detector when a request names it. */
  const modelsNamed = (name: string): Pick<ModelManager<{ readonly version: string }>, "current" | "state" | "previous" | "events"> => {
    if (name !== "" && name === deps.detector?.modelName && deps.detectorModels !== undefined) return deps.detectorModels;
    checkModel(name);
    return deps.models;
  };
  const checkModel = (name: string): void => {
    if (name !== "" && name !== deps.defaultModel) throw new AppError(Code.NOT_FOUND, `this inferencer serves ${deps.defaultModel}, not ${name}`);
  };
  return {
    async *streamKeypoints(requests, ctx) {
      if (streams >= deps.limits.maxStreams) throw new AppError(Code.RESOURCE_EXHAUSTED, `this inferencer already serves ${streams} streams, its limit`);
      const host = peerHost(ctx.peer);
      const fromHost = streamsByHost.get(host) ?? 0;
      if (fromHost >= deps.limits.maxStreamsPerPeer) {
        deps.logger.info("stream refused: too many from one client", { peer: ctx.peer, streams: fromHost });
        throw new AppError(Code.RESOURCE_EXHAUSTED, `too many streams from this client (${fromHost}, the limit per client)`);
      }
      streams++;
      activeStreams.add(1);
      streamsByHost.set(host, fromHost + 1);
      const streamId = randomBytes(8).toString("hex");
      const logger = deps.logger.child({ stream_id: streamId });
      logger.debug("stream opened", { peer: ctx.peer });
      // The session's own idle timeout only runs while it waits to read. A client that neither sends nor reads
      // leaves it suspended in a yield and the transport waiting on 'drain': only ctx.abort ends that call.
      const idleMs = deps.limits.streamIdleTimeoutMs;
      const watchdog = setTimeout(() => ctx.abort(new AppError(Code.DEADLINE_EXCEEDED, `stream closed: nothing sent or read for ${idleMs} ms`)), idleMs);
      const touch = (): void => void watchdog.refresh();
      try {
        for await (const response of runStream(touching(requests, touch), ctx.signal, { ...deps, logger, streamId })) {
          yield response;
          touch();
        }
      } finally {
        clearTimeout(watchdog);
        streams--;
        activeStreams.add(-1);
        const left = (streamsByHost.get(host) ?? 1) - 1;
        if (left === 0) streamsByHost.delete(host);
        else streamsByHost.set(host, left);
        logger.debug("stream closed");
      }
    },

    async detectKeypoints(request) {
      checkModel(request.modelName);
      if (request.frame === undefined) throw new AppError(Code.INVALID_ARGUMENT, "the request carries no frame");
      const problems = personSourceProblems(request.personSource, request.detector);
      if (problems.length > 0) throw AppError.invalid("request", problems);
      const people = resolvePersonSource(request.personSource, request.detector, deps.detector);
      const minKeypointScore = request.minKeypointScore === 0 ? 0.2 : request.minKeypointScore;
      const processed = await deps.processor.process(request.frame, { flipTest: request.flipTest, minKeypointScore, maxPersons: request.maxPersons, people }, { parent: otelContext.active(), logger: deps.logger });
      processed.span?.end();
      // One image, one answer: a failed frame is the call's status (a stream reports it in the frame instead).
      if (!processed.ok) throw new AppError((processed.result.status?.code ?? Code.INTERNAL) as Code, processed.result.status?.message ?? "the frame failed");
      const result = create(FrameResultSchema, processed.result);
      result.persons = personsInit(processed.estimates);
      return { result };
    },

    getServingModel(request) {
      const models = modelsNamed(request.modelName);
      const current = models.current;
      return {
        state: models.state,
        ...(current === undefined ? {} : { manifest: current.manifest, loadedAt: current.loadedAt }),
        previous: [...models.previous],
      };
    },

    async *watchServingModel(request, ctx) {
      const models = modelsNamed(request.modelName);
      for await (const event of models.events(AbortSignal.any([ctx.signal, ctx.draining]))) {
        yield {
          kind: event.kind,
          state: event.state,
          ...(event.serving === undefined ? {} : { serving: event.serving }),
          ...(event.candidate === undefined ? {} : { candidate: event.candidate }),
          ...(event.error === undefined ? {} : { error: event.error }),
          time: event.time,
        };
      }
    },
  };
}

/** Calls `touch` on every item `source` gives. */
async function* touching<T>(source: AsyncIterable<T>, touch: () => void): AsyncGenerator<T, void, undefined> {
  for await (const item of source) {
    touch();
    yield item;
  }
}

/**
 * The host part of a grpc-js peer ("10.0.0.7:51234", "::1:51234", "unknown"): streams are counted per host,
 * since one client opens as many connections, and so ports, as it likes.
 */
export function peerHost(peer: string): string {
  const colon = peer.lastIndexOf(":");
  if (colon < 0) return peer;
  const host = peer.slice(0, colon);
  return /^\d+$/.test(peer.slice(colon + 1)) ? host.replace(/^\[(.*)\]$/, "$1") : peer;
}
