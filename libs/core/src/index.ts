export { AppError, Code, codeName, isCode } from "./app-error.js";
export type { AppErrorOptions } from "./app-error.js";
export { createJsonLogger, isLogLevel, LogLevel, silentLogger } from "./logger.js";
export type { JsonLoggerOptions, LogFields, Logger } from "./logger.js";
export { EnvReader, parseDurationMs } from "./env.js";
export type { Env } from "./env.js";
export { abortReason, deferred, sleep, withDeadline } from "./async.js";
export { AsyncQueue } from "./async-queue.js";
export { stopOnSignals } from "./shutdown.js";
