import type { DescService } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { AppError, Code } from "@poseloop/core";
import { GrpcServer, type ServiceImpl } from "@poseloop/grpc";

/** A stub service listening on 127.0.0.1, and how to stop it. */
export interface ServiceStub {
  readonly address: string;
  stop(): Promise<void>;
}

/**
 * `service` on 127.0.0.1 answering with the given methods only (UNIMPLEMENTED for the rest): for CLI tests
 * of answers the fakes of @poseloop/client/testing never give, such as a next page of jobs or a rollback.
 */
export async function startServiceStub<S extends GenServiceMethods>(service: GenService<S>, methods: Partial<ServiceImpl<S>>): Promise<ServiceStub> {
  const desc = service as unknown as DescService;
  const given = methods as Partial<Record<string, unknown>>;
  const unimplemented = (name: string, streaming: boolean): unknown =>
    streaming
      ? // eslint-disable-next-line require-yield
        async function* () {
          throw new AppError(Code.UNIMPLEMENTED, `${name} is not in this stub`);
        }
      : () => {
          throw new AppError(Code.UNIMPLEMENTED, `${name} is not in this stub`);
        };
  const impl = Object.fromEntries(
    desc.methods.map((method) => [method.localName, given[method.localName] ?? unimplemented(method.localName, method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming")]),
  ) as unknown as ServiceImpl<S>;
  const server = new GrpcServer({ tracing: false, health: false, reflection: false });
  server.register(service, impl);
  const { port } = await server.listen("127.0.0.1", 0);
  return { address: `127.0.0.1:${port}`, stop: async () => server.forceShutdown() };
}
