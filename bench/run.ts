/**
 * Runs the benchmarks: `npm run bench` (all) or `npm run bench -- registry grpc-stream`. Each prints a
 * table with a ratio against a peer measured in the same run. Timings never fail anything.
 */
const benches: Record<string, () => Promise<{ run: () => Promise<void> }>> = {
  registry: () => import("./registry.js"),
  "grpc-stream": () => import("./grpc-stream.js"),
  "train-step": () => import("./train-step.js"),
  data: () => import("./data.js"),
  "engine-data": () => import("./engine-data.js"),
  quant: () => import("./quant.js"),
  stream: () => import("./stream.js"),
  metrics: () => import("./metrics.js"),
  "train-loop": () => import("./train-loop.js"),
  "train-demo": () => import("./train-demo.js"),
  "train-engines": () => import("./train-engines.js"),
  "train-parity": () => import("./train-parity.js"),
  "train-ema": () => import("./train-ema.js"),
  soak: () => import("./soak.js"),
  takeover: () => import("./takeover.js"),
  "stream-detect": () => import("./stream-detect.js"),
};

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!(name in benches)) {
    process.stderr.write(`unknown benchmark ${name}; known: ${Object.keys(benches).join(", ")}\n`);
    process.exit(2);
  }
}
process.stdout.write(`node ${process.version}, ${(await import("node:os")).cpus().length} cores\n`);
for (const [name, load] of Object.entries(benches)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  await (await load()).run();
}
