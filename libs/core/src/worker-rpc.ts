import { parentPort, Worker, type TransferListItem } from "node:worker_threads";
import { AppError, Code, isCode } from "./app-error.js";

interface Request {
  readonly id: number;
  readonly op: string;
  readonly args: unknown;
}

type Response =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: WireError };

/**
 * An error crossing the thread boundary. `message` is what an AppError thrown in the worker said to its users;
 * `detail` is the text of anything else (native errors, bugs), kept only as the cause on the calling side.
 */
interface WireError {
  readonly code: number;
  readonly message: string;
  readonly problems: readonly string[];
  readonly name: string;
  readonly detail?: string;
  readonly stack?: string;
}

/** What a worker handler may return: a value, or a value with buffers to transfer instead of copy. */
export type RpcResult = unknown;

export class Transfer<T> {
  readonly value: T;
  readonly list: readonly TransferListItem[];
  constructor(value: T, list: readonly TransferListItem[]) {
    this.value = value;
    this.list = list;
  }
}

/**
 * Starts a worker for the module `name` next to `here` (import.meta.url of the caller): the .js file when
 * running from dist/, the .ts file through tsx when running from sources (tests, `npm run bench`).
 */
export function startModuleWorker(here: string, name: string, options: { workerData?: unknown; name?: string } = {}): Worker {
  const base = new URL(here);
  const fromSources = base.pathname.endsWith(".ts");
  const url = new URL(`${name}.${fromSources ? "ts" : "js"}`, base);
  const common = { workerData: options.workerData, ...(options.name === undefined ? {} : { name: options.name }) };
  if (!fromSources) return new Worker(url, common);
  // Node does not apply loaders given in a worker's execArgv to its entry file, so a tiny bootstrap registers
  // tsx first and then imports the TypeScript module.
  const bootstrap = `import(${JSON.stringify(tsxApi())}).then(({ register }) => { register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(bootstrap, { ...common, eval: true, execArgv: ["--conditions=@poseloop/source"] });
}

function tsxApi(): string {
  try {
    return import.meta.resolve("tsx/esm/api");
  } catch {
    return "tsx/esm/api";
  }
}

/**
 * The calling side of a worker: call(op, args) returns the handler's result, or rejects with its AppError (code,
 * message and problems preserved); any other error thrown in the worker arrives as INTERNAL "internal error", its
 * text and stack in the cause for the log. Every pending call fails with UNAVAILABLE if the worker dies.
 */
export class WorkerClient {
  readonly worker: Worker;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: unknown) => void }>();
  #nextId = 1;
  #dead: AppError | undefined;

  constructor(worker: Worker) {
    this.worker = worker;
    worker.on("message", (message: Response) => {
      const pending = this.#pending.get(message.id);
      if (pending === undefined) return;
      this.#pending.delete(message.id);
      if (message.ok) pending.resolve(message.result);
      else {
        const { code, message: text, problems, name, detail, stack } = message.error;
        const cause = Object.assign(new Error(detail ?? text), { name, stack });
        pending.reject(new AppError(isCode(code) ? code : Code.INTERNAL, text, { problems, cause }));
      }
    });
    const fail = (error: AppError): void => {
      this.#dead ??= error;
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
    };
    worker.on("error", (error) => fail(new AppError(Code.INTERNAL, "worker crashed", { cause: error })));
    worker.on("exit", (code) => fail(new AppError(Code.UNAVAILABLE, `worker exited with code ${code}`)));
  }

  call<T>(op: string, args?: unknown, transfer: readonly TransferListItem[] = []): Promise<T> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.worker.postMessage({ id, op, args } satisfies Request, [...transfer]);
    });
  }

  async terminate(): Promise<void> {
    await this.worker.terminate();
  }
}

/**
 * The worker side: answers WorkerClient calls with `handlers[op](args)`, one call at a time in arrival order
 * (a training step must not interleave with a state export). A handler returns a value, or a Transfer to move
 * large buffers instead of copying them.
 */
export function serveWorkerRpc(handlers: Readonly<Record<string, (args: never) => unknown>>): void {
  const port = parentPort;
  if (port === null) throw new AppError(Code.INTERNAL, "serveWorkerRpc must run inside a worker thread");
  let queue: Promise<void> = Promise.resolve();
  port.on("message", (request: Request) => {
    queue = queue.then(async () => {
      const handler = handlers[request.op];
      try {
        if (handler === undefined) throw new AppError(Code.UNIMPLEMENTED, `unknown worker operation ${request.op}`);
        const result = await handler(request.args as never);
        if (result instanceof Transfer) port.postMessage({ id: request.id, ok: true, result: result.value } satisfies Response, [...result.list]);
        else port.postMessage({ id: request.id, ok: true, result } satisfies Response);
      } catch (error) {
        // Only an AppError's message is written for users; any other text (onnxruntime's source paths, C++
        // symbols) travels as the detail, which the caller logs and never sends on.
        const appError = AppError.from(error);
        const original = error instanceof Error ? error : undefined;
        port.postMessage({
          id: request.id,
          ok: false,
          error: {
            code: appError.code,
            message: appError.message,
            problems: appError.problems,
            name: original?.name ?? "Error",
            ...(error instanceof AppError ? {} : { detail: original?.message ?? String(error) }),
            ...(original?.stack === undefined ? {} : { stack: original.stack }),
          },
        } satisfies Response);
      }
    });
  });
}
