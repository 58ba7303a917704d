import { create } from "@bufbuild/protobuf";
import {
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  type Health,
  type HealthCheckResponse,
} from "@poseloop/proto/grpc/health/v1/health_pb";
import { AppError, AsyncQueue, Code } from "@poseloop/core";
import type { MethodsOf, ServiceImpl } from "./handler-types.js";

export const ServingStatus = HealthCheckResponse_ServingStatus;
export type ServingStatus = HealthCheckResponse_ServingStatus;

/**
 * grpc.health.v1: the overall status under "" and one per service name. Owners set statuses (the inferencer
 * reports NOT_SERVING until its first model is loaded); Watch streams every change.
 */
export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<AsyncQueue<ServingStatus>>>();
  #shutdown = false;

  setStatus(service: string, status: ServingStatus): void {
    if (this.#shutdown) return;
    this.#set(service, status);
  }

  getStatus(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** Reports NOT_SERVING everywhere and ignores later changes (the server is going away). */
  shutdown(): void {
    if (this.#shutdown) return;
    for (const service of this.#statuses.keys()) this.#set(service, ServingStatus.NOT_SERVING);
    this.#shutdown = true;
    for (const queues of this.#watchers.values()) for (const queue of queues) queue.close();
  }

  implementation(): ServiceImpl<MethodsOf<typeof Health>> {
    return {
      check: (request) => {
        const status = this.#statuses.get(request.service);
        if (status === undefined) throw new AppError(Code.NOT_FOUND, `unknown service ${JSON.stringify(request.service)}`);
        return { status };
      },
      list: () => {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const [service, status] of this.#statuses) statuses[service] = create(HealthCheckResponseSchema, { status });
        return { statuses };
      },
      watch: (request, ctx) => this.#watch(request.service, ctx.signal),
    };
  }

  async *#watch(service: string, signal: AbortSignal): AsyncGenerator<{ status: ServingStatus }> {
    const queue = new AsyncQueue<ServingStatus>();
    queue.push(this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN);
    if (this.#shutdown) queue.close();
    let watchers = this.#watchers.get(service);
    if (watchers === undefined) {
      watchers = new Set();
      this.#watchers.set(service, watchers);
    }
    watchers.add(queue);
    try {
      let last: ServingStatus | undefined;
      for await (const status of queue.iterate(signal)) {
        if (status === last) continue;
        last = status;
        yield { status };
      }
    } finally {
      watchers.delete(queue);
    }
  }

  #set(service: string, status: ServingStatus): void {
    this.#statuses.set(service, status);
    for (const queue of this.#watchers.get(service) ?? []) queue.push(status);
  }
}
