import { createRegistry, toBinary, type DescFile, type DescService, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServerReflection, ServerReflectionRequest } from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import type { ServerReflectionResponseSchema } from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@poseloop/core";
import type { MethodsOf, ServiceImpl } from "./handler-types.js";

type ReflectionResponse = MessageInitShape<typeof ServerReflectionResponseSchema>;

/**
 * gRPC server reflection over the descriptors protobuf-es embeds in generated code: lists the served services
 * and answers file and symbol lookups with each file and its transitive dependencies, as grpcurl expects.
 */
export function createReflectionImpl(
  served: () => { readonly names: readonly string[]; readonly services: readonly DescService[] },
): ServiceImpl<MethodsOf<typeof ServerReflection>> {
  return {
    serverReflectionInfo: async function* (requests) {
      const { names, services } = served();
      const files = uniqueFiles(services.map((service) => service.file));
      const registry: Lookup = {
        types: createRegistry(...files),
        files: new Map(files.map((file) => [file.proto.name, file])),
      };
      for await (const request of requests) {
        yield answer(request, registry, names);
      }
    },
  };
}

function answer(
  request: ServerReflectionRequest,
  registry: Lookup,
  serviceNames: readonly string[],
): ReflectionResponse {
  const base = { validHost: request.host, originalRequest: request };
  const files = (file: DescFile | undefined, what: string): ReflectionResponse =>
    file === undefined
      ? { ...base, messageResponse: { case: "errorResponse", value: { errorCode: Code.NOT_FOUND, errorMessage: `${what} not found` } } }
      : {
          ...base,
          messageResponse: {
            case: "fileDescriptorResponse",
            value: { fileDescriptorProto: withDependencies(file).map((f) => toBinary(FileDescriptorProtoSchema, f.proto)) },
          },
        };
  const message = request.messageRequest;
  switch (message.case) {
    case "listServices":
      return {
        ...base,
        messageResponse: { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } },
      };
    case "fileByFilename":
      return files(registry.files.get(message.value), `file ${message.value}`);
    case "fileContainingSymbol":
      return files(fileOfSymbol(registry, message.value), `symbol ${message.value}`);
    case "fileContainingExtension": {
      const extendee = registry.types.getMessage(message.value.containingType);
      const extension = extendee === undefined ? undefined : registry.types.getExtensionFor(extendee, message.value.extensionNumber);
      return files(extension?.file, `extension ${message.value.extensionNumber} of ${message.value.containingType}`);
    }
    case "allExtensionNumbersOfType": {
      const numbers: number[] = [];
      for (const type of registry.types) {
        if (type.kind === "extension" && type.extendee.typeName === message.value) numbers.push(type.number);
      }
      return {
        ...base,
        messageResponse: {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: message.value, extensionNumber: numbers },
        },
      };
    }
    default:
      return {
        ...base,
        messageResponse: { case: "errorResponse", value: { errorCode: Code.UNIMPLEMENTED, errorMessage: "unsupported request" } },
      };
  }
}

interface Lookup {
  readonly types: Registry;
  /** By file name as protoc knows it ("poseloop/common/v1/model.proto"). */
  readonly files: ReadonlyMap<string, DescFile>;
}

function fileOfSymbol(registry: Lookup, symbol: string): DescFile | undefined {
  const direct = registry.types.get(symbol);
  if (direct !== undefined) return direct.file;
  // A method or field: "package.Service.Method" names its parent.
  const parent = registry.types.get(symbol.slice(0, Math.max(0, symbol.lastIndexOf("."))));
  return parent?.file;
}

function withDependencies(file: DescFile): DescFile[] {
  const out: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile): void => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    out.push(f);
    for (const dependency of f.dependencies) visit(dependency);
  };
  visit(file);
  return out;
}

function uniqueFiles(files: readonly DescFile[]): DescFile[] {
  const byName = new Map<string, DescFile>();
  for (const file of files) for (const f of withDependencies(file)) byName.set(f.name, f);
  return [...byName.values()];
}
