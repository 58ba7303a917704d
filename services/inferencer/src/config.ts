import { assertModelName, busOptionsFromEnv, modelNameProblems, type BusSettings } from "@poseloop/bus";
import { EnvReader, LogLevel, POSELOOP_ENV_VARIABLES, unknownVariables, type Env, type UnknownVariable } from "@poseloop/core";
import { accessKey, grpcServerSettingsFromEnv, Role, type GrpcServerSettings, type MethodAccessMap } from "@poseloop/grpc";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { metricsEndpointFromEnv, telemetryConfigFromEnv, type MetricsEndpoint, type TelemetryConfig } from "@poseloop/telemetry";
import { hostname } from "node:os";

export interface InferenceLimits {
  /** Encoded or raw frame bytes accepted. */
  readonly maxFrameBytes: number;
  /** Decoded frame pixels accepted (width × height). */
  readonly maxFramePixels: number;
  /** Person boxes per frame. */
  readonly maxBoxesPerFrame: number;
  /** Concurrent StreamKeypoints calls; more get RESOURCE_EXHAUSTED. */
  readonly maxStreams: number;
  /** Concurrent StreamKeypoints calls from one client host, so one client cannot take every slot. */
  readonly maxStreamsPerPeer: number;
  /** Frames in flight per stream when the client asks for none, and the most it may ask for. */
  readonly defaultMaxInFlight: number;
  readonly maxInFlight: number;
  /** Largest model artifact loaded. */
  readonly maxModelBytes: number;
  /** How long a new stream may take to send its options; a silent call must not hold a stream slot. */
  readonly streamFirstMessageTimeoutMs: number;
  /**
   * How long a stream may go without sending a message while the server waits to read one, and without
   * sending or reading one while the server waits for it to read.
   */
  readonly streamIdleTimeoutMs: number;
}

export interface InferencerConfig {
  readonly grpc: GrpcServerSettings;
  /** The bus, with the NATS credentials and TLS files (POSELOOP_NATS_*) in `natsSecurity`. */
  readonly bus: BusSettings;
  readonly logLevel: LogLevel;
  readonly telemetry: TelemetryConfig;
  /** The Prometheus endpoint (POSELOOP_METRICS_PORT), on the gRPC listen host; undefined: none. */
  readonly metrics: MetricsEndpoint | undefined;
  readonly telemetryWarnings: readonly string[];
  /** POSELOOP_* variables that no PoseLoop process reads (typos), to warn about at start. */
  readonly unknownVariables: readonly UnknownVariable[];
  /** The model name served when a request names none (the only one this process serves). */
  readonly defaultModel: string;
  /**
   * The person detector's model name (POSELOOP_DETECTOR_MODEL): its serving version finds the people of frames
   * that come without boxes. Undefined: no detector (frames without boxes are one whole-frame person).
   */
  readonly detectorModel: string | undefined;
  readonly instanceId: string;
  /** Inference worker threads, each with its own sessions. */
  readonly workers: number;
  readonly intraOpThreads: number;
  /** People per batch, and how long a frame may wait for a batch to fill. */
  readonly maxBatch: number;
  readonly batchWaitMs: number;
  /** Fraction of frames that get a span. */
  readonly frameTraceRatio: number;
  readonly limits: InferenceLimits;
}

/**
 * The role each InferenceService method needs: all of them `stream` (an `admin` token may call them too).
 * GetServingModel and WatchServingModel are not open: they name the training job and digest behind a model.
 */
export const INFERENCER_METHOD_ACCESS: MethodAccessMap = Object.freeze(
  Object.fromEntries(InferenceService.methods.map((method) => [accessKey(method), Role.STREAM])),
);

/**
 * The inferencer's configuration from environment variables, every problem reported at once:
 * POSELOOP_INFERENCER_LISTEN (default 127.0.0.1:50051; another address needs tokens or TLS), POSELOOP_MODEL (default "demo"),
 * POSELOOP_DETECTOR_MODEL (default none), POSELOOP_NATS_URL,
 * POSELOOP_BUS_DIR, POSELOOP_INFERENCE_WORKERS, POSELOOP_INTRA_OP_THREADS, POSELOOP_MAX_BATCH,
 * POSELOOP_BATCH_WAIT, POSELOOP_MAX_STREAMS, POSELOOP_MAX_STREAMS_PER_PEER, POSELOOP_STREAM_MAX_IN_FLIGHT, POSELOOP_MAX_FRAME_BYTES,
 * POSELOOP_MAX_FRAME_PIXELS, POSELOOP_MAX_MODEL_BYTES, POSELOOP_STREAM_FIRST_MESSAGE_TIMEOUT,
 * POSELOOP_STREAM_IDLE_TIMEOUT, POSELOOP_FRAME_TRACE_RATIO, POSELOOP_LOG_LEVEL,
 * POSELOOP_INSTANCE_ID, POSELOOP_INFERENCER_TOKENS ("role:token,..."), POSELOOP_INFERENCER_TOKENS_FILE,
 * POSELOOP_TLS_CERT, POSELOOP_TLS_KEY, POSELOOP_TLS_CLIENT_CA, POSELOOP_INSECURE, POSELOOP_GRPC_MAX_MESSAGE_BYTES,
 * POSELOOP_DRAIN_TIMEOUT, POSELOOP_GRPC_KEEPALIVE, POSELOOP_GRPC_MAX_CONNECTION_AGE, POSELOOP_GRPC_MAX_CONNECTION_IDLE, POSELOOP_METRICS_PORT and the standard OTEL_* ones. Without tokens or TLS it listens on 127.0.0.1 only.
 * Other POSELOOP_* names that no PoseLoop process reads come back in `unknownVariables`.
 */
export function loadConfig(env: Env): InferencerConfig {
  const reader = new EnvReader(env);
  const grpc = grpcServerSettingsFromEnv(reader, "POSELOOP_INFERENCER", 50051, { methods: INFERENCER_METHOD_ACCESS });
  const defaultModel = reader.string("POSELOOP_MODEL", { default: "demo" });
  for (const problem of modelNameProblems(defaultModel)) reader.problem(`POSELOOP_MODEL: ${problem}`);
  const detectorName = reader.string("POSELOOP_DETECTOR_MODEL", { default: "" });
  for (const problem of detectorName === "" ? [] : modelNameProblems(detectorName)) reader.problem(`POSELOOP_DETECTOR_MODEL: ${problem}`);
  if (detectorName !== "" && detectorName === defaultModel) reader.problem(`POSELOOP_DETECTOR_MODEL: ${detectorName} is the pose model's name (POSELOOP_MODEL); a name serves one kind of model`);
  const instanceId = reader.string("POSELOOP_INSTANCE_ID", {
    default: `inferencer-${hostname()}-${process.pid}`,
    pattern: /^[A-Za-z0-9._-]{1,64}$/,
    hint: "must be 1-64 letters, digits, '.', '_' or '-'",
  });
  const bus = busOptionsFromEnv(reader, instanceId);
  const logLevel = reader.oneOf("POSELOOP_LOG_LEVEL", Object.keys(LogLevel) as LogLevel[], { default: "info" });
  const workers = reader.int("POSELOOP_INFERENCE_WORKERS", { default: 1, min: 1, max: 64 });
  const intraOpThreads = reader.int("POSELOOP_INTRA_OP_THREADS", { default: 1, min: 1, max: 256 });
  const maxBatch = reader.int("POSELOOP_MAX_BATCH", { default: 8, min: 1, max: 256 });
  const batchWaitMs = reader.durationMs("POSELOOP_BATCH_WAIT", { default: 0, min: 0, max: 1000 });
  const frameTraceRatio = reader.number("POSELOOP_FRAME_TRACE_RATIO", { default: 1, min: 0, max: 1 });
  const defaultMaxInFlight = reader.int("POSELOOP_STREAM_MAX_IN_FLIGHT", { default: 4, min: 1, max: 256 });
  const maxStreams = reader.int("POSELOOP_MAX_STREAMS", { default: 64, min: 1, max: 100_000 });
  const limits: InferenceLimits = {
    maxFrameBytes: reader.int("POSELOOP_MAX_FRAME_BYTES", { default: 8 * 1024 * 1024, min: 1024 }),
    maxFramePixels: reader.int("POSELOOP_MAX_FRAME_PIXELS", { default: 3840 * 2160, min: 1 }),
    maxBoxesPerFrame: 64,
    maxStreams,
    // Behind a proxy every client has the proxy's address: raise it to POSELOOP_MAX_STREAMS there.
    maxStreamsPerPeer: reader.int("POSELOOP_MAX_STREAMS_PER_PEER", { default: Math.min(16, maxStreams), min: 1, max: 100_000 }),
    defaultMaxInFlight,
    maxInFlight: Math.max(defaultMaxInFlight, 32),
    maxModelBytes: reader.int("POSELOOP_MAX_MODEL_BYTES", { default: 512 * 1024 * 1024, min: 1024 }),
    streamFirstMessageTimeoutMs: reader.durationMs("POSELOOP_STREAM_FIRST_MESSAGE_TIMEOUT", { default: 10_000, min: 1, max: 3_600_000 }),
    streamIdleTimeoutMs: reader.durationMs("POSELOOP_STREAM_IDLE_TIMEOUT", { default: 60_000, min: 1, max: 86_400_000 }),
  };
  const metrics = metricsEndpointFromEnv(reader, grpc.host);
  reader.done("inferencer configuration");
  // The other service's and the CLI's variables are known too: users run them all from one shell.
  const unknown = unknownVariables(env, "POSELOOP_", [...POSELOOP_ENV_VARIABLES, ...reader.names]);
  assertModelName(defaultModel);
  const { config: telemetry, warnings } = telemetryConfigFromEnv(env, { serviceName: "poseloop-inferencer", serviceVersion: "0.1.0" });
  return Object.freeze({ grpc, bus, logLevel, telemetry, metrics, telemetryWarnings: warnings, unknownVariables: unknown, defaultModel, detectorModel: detectorName === "" ? undefined : detectorName, instanceId, workers, intraOpThreads, maxBatch, batchWaitMs, frameTraceRatio, limits });
}
