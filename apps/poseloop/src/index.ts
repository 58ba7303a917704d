export { runCli } from "./cli/run-cli.js";
export type { CliIo, CliOutput } from "./cli/cli-io.js";
export { ExitCode } from "./cli/error-report.js";
export { runDemo } from "./demo/demo.js";
export type { DemoOptions } from "./demo/demo.js";
export { TraceCollector } from "./demo/trace-collector.js";
export type { CollectedSpan } from "./demo/trace-collector.js";
export { serviceEntry } from "./demo/service-entry.js";
