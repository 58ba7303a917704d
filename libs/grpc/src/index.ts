export { createClient } from "./client.js";
export type { ClientControls, ClientOptions } from "./client.js";
export type { CallOptions, ClientMethod, HandlerContext, MethodHandler, MethodsOf, ServiceClient, ServiceImpl } from "./handler-types.js";
export { HealthService, ServingStatus } from "./health.js";
export { GrpcServer } from "./server.js";
export type { DrainResult, GrpcServerOptions, ListenAddress } from "./server.js";
export { deserializer, methodPath, serializer, toServiceDefinition } from "./service-definition.js";
export { fromServiceError, PROBLEMS_METADATA_KEY, toStatus } from "./status.js";
