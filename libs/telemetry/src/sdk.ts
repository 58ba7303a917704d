import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { propagation, type TextMapPropagator } from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPMetricExporter as OtlpGrpcMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { OTLPMetricExporter as OtlpJsonMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { OTLPMetricExporter as OtlpProtoMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { OTLPTraceExporter as OtlpGrpcTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as OtlpJsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as OtlpProtoTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { ConsoleMetricExporter, PeriodicExportingMetricReader, type IMetricReader, type PushMetricExporter } from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { AppError, Code, type Logger } from "@poseloop/core";
import type { MetricsEndpoint, OtlpProtocol, TelemetryConfig } from "./config.js";

/** Where a service's Prometheus endpoint listens, once it does. */
export interface MetricsAddress {
  readonly host: string;
  readonly port: number;
  /** `http://host:port/metrics`. */
  readonly url: string;
}

/** The running OpenTelemetry SDK of a service process. */
export interface Telemetry {
  readonly config: TelemetryConfig;
  /** The bound /metrics endpoint (the chosen port when 0 was asked for); undefined when none was asked for. */
  readonly metricsAddress: MetricsAddress | undefined;
  /** Flushes pending spans and metrics, stops exporting and closes /metrics. Safe to call twice. */
  shutdown(): Promise<void>;
}

export interface StartTelemetryOptions {
  logger?: Logger;
  extraSpanProcessors?: readonly SpanProcessor[];
  /** Serve the metrics for Prometheus to scrape (POSELOOP_METRICS_PORT; see metricsEndpointFromEnv). */
  metrics?: MetricsEndpoint | undefined;
}

/** W3C trace context and baggage, the propagation every PoseLoop process uses. */
export function createW3CPropagator(): TextMapPropagator {
  return new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  });
}

/**
 * Starts the OpenTelemetry Node SDK for a service: resource, sampler, W3C propagation, the trace exporter chosen
 * by the config, and the MeterProvider with its readers: the OTEL_METRICS_EXPORTER ones and, when `metrics` is
 * given, a Prometheus endpoint at `http://host:port/metrics` (bound before this resolves, so a port in use fails
 * the start). Extra span processors (e.g. a console summary) can be added. Without an exporter the propagator is
 * still installed, so trace context keeps flowing through the process to the next hop.
 *
 * The resource is the SDK's: service name and version as defaults, then what its detectors find (env, process
 * and host, or OTEL_NODE_RESOURCE_DETECTORS), so OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win as the
 * specification says.
 */
export async function startTelemetry(config: TelemetryConfig, options: StartTelemetryOptions = {}): Promise<Telemetry> {
  const propagator = createW3CPropagator();
  if (!config.enabled) {
    propagation.setGlobalPropagator(propagator);
    if (options.metrics !== undefined) options.logger?.warn("OTEL_SDK_DISABLED=true: no metrics are recorded and /metrics is not served");
    return { config, metricsAddress: undefined, shutdown: async () => undefined };
  }
  const processors: SpanProcessor[] = [...(options.extraSpanProcessors ?? [])];
  if (config.exporter === "otlp") {
    const exporter =
      config.otlpProtocol === "grpc"
        ? new OtlpGrpcTraceExporter({ url: config.otlpEndpoint })
        : config.otlpProtocol === "http/json"
          ? new OtlpJsonTraceExporter({ url: config.otlpEndpoint })
          : new OtlpProtoTraceExporter({ url: config.otlpEndpoint });
    processors.push(new BatchSpanProcessor(exporter));
  } else if (config.exporter === "console") {
    processors.push(new SimpleSpanProcessor(new ConsoleSpanExporter()));
  }
  const scrape = options.metrics === undefined ? undefined : await ScrapeEndpoint.listen(options.metrics);
  const sdk = new NodeSDK({
    resource: defaultResource().merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: config.serviceName,
        [ATTR_SERVICE_VERSION]: config.serviceVersion,
      }),
    ),
    spanProcessors: processors,
    // Given readers replace the SDK's own choice from OTEL_METRICS_EXPORTER, which knows nothing of /metrics and
    // would default to OTLP on localhost; an empty list registers no MeterProvider (metrics stay no-ops).
    metricReaders: [...(scrape === undefined ? [] : [scrape.reader]), ...metricReaders(config)],
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    textMapPropagator: propagator,
    instrumentations: [],
  });
  sdk.start();
  options.logger?.info("telemetry started", {
    exporter: config.exporter,
    endpoint: config.exporter === "otlp" ? config.otlpEndpoint : undefined,
    sample_ratio: config.sampleRatio,
    metrics_exporters: config.metricsExporters.join(",") || "none",
    metrics_url: scrape?.address.url,
  });
  let stopped: Promise<void> | undefined;
  return {
    config,
    metricsAddress: scrape?.address,
    shutdown: () => {
      stopped ??= (async () => {
        await sdk.shutdown().catch((error: unknown) => {
          options.logger?.warn("telemetry shutdown failed", { err: error });
        });
        await scrape?.close();
      })();
      return stopped;
    },
  };
}

/**
 * The periodic readers OTEL_METRICS_EXPORTER asks for. The OTLP exporter reads its own OTEL_EXPORTER_OTLP_METRICS_*
 * and OTEL_EXPORTER_OTLP_* settings (endpoint, headers, compression, timeout, temporality, certificates).
 */
function metricReaders(config: TelemetryConfig): IMetricReader[] {
  const periodic = (exporter: PushMetricExporter): IMetricReader =>
    new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: config.metricExportIntervalMs, exportTimeoutMillis: config.metricExportTimeoutMs });
  return config.metricsExporters.map((kind) =>
    periodic(kind === "otlp" ? otlpMetricExporter(config.otlpMetricsProtocol) : new ConsoleMetricExporter()),
  );
}

function otlpMetricExporter(protocol: OtlpProtocol): PushMetricExporter {
  if (protocol === "grpc") return new OtlpGrpcMetricExporter();
  if (protocol === "http/json") return new OtlpJsonMetricExporter();
  return new OtlpProtoMetricExporter();
}

/**
 * The /metrics endpoint: the SDK's Prometheus reader behind a server of our own, since the reader's server treats
 * port 0 as its default 9464 and does not say where it listens.
 */
class ScrapeEndpoint {
  readonly reader: PrometheusExporter;
  readonly address: MetricsAddress;
  readonly #server: Server;

  private constructor(reader: PrometheusExporter, server: Server, address: MetricsAddress) {
    this.reader = reader;
    this.#server = server;
    this.address = address;
  }

  static async listen(endpoint: MetricsEndpoint): Promise<ScrapeEndpoint> {
    const reader = new PrometheusExporter({ host: endpoint.host, port: endpoint.port, preventServerStart: true });
    const server = createServer((request: IncomingMessage, response: ServerResponse) => {
      const path = (request.url ?? "").split("?")[0];
      if (path === "/metrics" && (request.method === "GET" || request.method === "HEAD")) {
        reader.getMetricsRequestHandler(request, response);
      } else {
        response.statusCode = 404;
        response.end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: endpoint.host, port: endpoint.port }, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((error: unknown) => {
      throw new AppError(Code.UNAVAILABLE, `cannot serve /metrics on ${endpoint.host}:${endpoint.port} (POSELOOP_METRICS_PORT)`, { cause: error });
    });
    // A scrape in progress must not keep a stopping service alive.
    server.unref();
    const { port } = server.address() as AddressInfo;
    const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
    return new ScrapeEndpoint(reader, server, { host: endpoint.host, port, url: `http://${host}:${port}/metrics` });
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}
