/**
 * What metrics cost a serving inferencer: 8 saturated EVERY_FRAME streams and 8 lock-step ones against the same
 * inferencer build with no MeterProvider (every instrument a no-op), in one run, alternating off/on twice so
 * drift of the machine shows. "on" is the production path: the service SDK from libs/telemetry with its
 * /metrics endpoint (POSELOOP_METRICS_PORT), scraped over HTTP every second while the streams run, as Prometheus
 * would. Traces are off in both (OTEL_TRACES_EXPORTER=none) so the ratio is the metrics' alone.
 */
import { metrics } from "@opentelemetry/api";
import { ModelRegistry, openBus } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { createClient } from "@poseloop/grpc";
import { loadConfig, startInferencer } from "@poseloop/inferencer";
import { buildTestModel, publishTestModel, type InferenceClient } from "@poseloop/inferencer/testing";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { startTelemetry, telemetryConfigFromEnv, type Telemetry } from "@poseloop/telemetry";
import { makeTempDir } from "@poseloop/testkit";
import { fmt, printTable } from "./harness.js";
import { percentileOf, samples, served } from "./stream.js";

const QUICK = process.env["POSELOOP_BENCH_QUICK"] === "1";
const FRAMES = QUICK ? 60 : 400;

export async function run(): Promise<void> {
  const dir = await makeTempDir("poseloop-bench-metrics-");
  const config = { architecture: "lite" as const, inputWidth: 48, inputHeight: 64, numKeypoints: 17, lite: { channels: [16, 32, 64] as const } };
  const [model, data] = await Promise.all([buildTestModel({ seed: 1, config }), samples(48)]);
  const busDir = `${dir.path}/bus`;
  const bus = await openBus({ natsServers: [], embeddedDir: busDir });
  const registry = await ModelRegistry.open(bus, silentLogger);
  await publishTestModel(registry, "bench", model);
  const rows: string[][] = [];
  const fps: Record<"off" | "on", number[]> = { off: [], on: [] };
  try {
    for (const mode of ["off", "on", "off", "on"] as const) {
      let telemetry: Telemetry | undefined;
      let scrapes = 0;
      if (mode === "on") {
        const { config: telemetryConfig } = telemetryConfigFromEnv({ OTEL_TRACES_EXPORTER: "none" }, { serviceName: "bench-inferencer" });
        telemetry = await startTelemetry(telemetryConfig, { metrics: { host: "127.0.0.1", port: 0 } });
      }
      // Instruments are made when the inferencer's components are: a fresh inferencer per mode.
      const inferencer = await startInferencer(
        loadConfig({ POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_BUS_DIR: busDir, POSELOOP_MODEL: "bench", POSELOOP_INFERENCE_WORKERS: "2", POSELOOP_INTRA_OP_THREADS: "1", POSELOOP_MAX_BATCH: "8", POSELOOP_FRAME_TRACE_RATIO: "0" }),
        silentLogger,
      );
      const client: InferenceClient = createClient(InferenceService, `127.0.0.1:${inferencer.address.port}`);
      const scraping = new AbortController();
      const scraper = (async () => {
        const url = telemetry?.metricsAddress?.url;
        while (url !== undefined && !scraping.signal.aborted) {
          const body = await (await fetch(url)).text();
          if (body.includes("poseloop_inferencer_frames_total")) scrapes++;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      })();
      try {
        await inferencer.models.waitForServing(30_000);
        await served(client, data, 8, 16);
        const saturated = await served(client, data, 8, FRAMES);
        const paced = await served(client, data, 8, Math.min(FRAMES, 120), { lockstep: true });
        fps[mode].push(saturated.fps);
        rows.push([mode, fmt(saturated.fps, 0), fmt(percentileOf(paced.latencies, 50), 2), fmt(percentileOf(paced.latencies, 99), 2), mode === "on" ? String(scrapes) : "-"]);
      } finally {
        scraping.abort();
        await scraper;
        client.$close();
        await inferencer.stop();
        await telemetry?.shutdown();
        metrics.disable();
      }
    }
  } finally {
    await bus.close();
    await dir.remove();
  }
  const mean = (values: number[]): number => values.reduce((a, b) => a + b, 0) / values.length;
  printTable(
    "inferencer with metrics on (SDK + /metrics scraped every 1 s) vs off (no MeterProvider): 8 streams, int8 lite 48x64, 2 workers",
    ["metrics", "saturated fps", "lock-step p50 ms", "lock-step p99 ms", "scrapes seeing frames"],
    rows,
  );
  printTable("ratio", ["on fps / off fps (mean of 2 runs each)"], [[fmt(mean(fps.on) / mean(fps.off), 3)]]);
}
