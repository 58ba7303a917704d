import { create } from "@bufbuild/protobuf";
import { ModelRegistry, NatsBus, type Bus } from "@poseloop/bus";
import { encodeModel } from "@poseloop/onnx";
import { ModelManifestSchema, ModelRefSchema, Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { buildInferenceModel, defineModel, initialize, modelManifest, Rng, type ModelConfig, type Weights } from "@poseloop/train";

/**
 * Publishes small fp32 pose models into a NATS registry, for CLI tests against a real inferencer. (The
 * inferencer's own test helpers live in its service package, which a library must not import; this is the
 * same recipe through the libraries: a lite 48x64 heatmap net with random weights.)
 */
export class TestModelPublisher {
  readonly #bus: Bus;
  readonly registry: ModelRegistry;

  private constructor(bus: Bus, registry: ModelRegistry) {
    this.#bus = bus;
    this.registry = registry;
  }

  static async connect(natsUrl: string): Promise<TestModelPublisher> {
    const bus = await NatsBus.connect({ servers: natsUrl, name: `client-test-publisher-${process.pid}`, reconnectTimeWaitMs: 100 });
    try {
      return new TestModelPublisher(bus, await ModelRegistry.open(bus));
    } catch (error) {
      await bus.close();
      throw error;
    }
  }

  /** Publishes a model under `modelName` and makes it serve; resolves with its version. */
  async publish(modelName: string, seed: number): Promise<string> {
    const config: ModelConfig = { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17, lite: { channels: [8, 16, 32] } };
    const bytes = encodeModel(buildInferenceModel(defineModel(config), randomWeights(config, seed)));
    const manifest = create(ModelManifestSchema, modelManifest(config, { precision: Precision.FP32 }));
    manifest.model = create(ModelRefSchema, { name: modelName });
    manifest.trainingJobId = "job-client-test";
    const published = await this.registry.publish({
      manifest,
      files: [{ file: "model.onnx", data: bytes, precision: Precision.FP32 }],
      servingFile: "model.onnx",
      promote: true,
      setBy: "client-test",
      reason: "client test model",
    });
    return published.manifest.model?.version ?? "";
  }

  async close(): Promise<void> {
    await this.#bus.close();
  }
}

/** Weights wide enough that the heatmaps have structure (the reference head init gives near-zero outputs). */
function randomWeights(config: ModelConfig, seed: number): Weights {
  const model = defineModel(config);
  const rng = new Rng(seed);
  const widen = (spec: (typeof model.registry.params)[number]) => (spec.init.kind === "normal" ? { ...spec, init: { kind: "normal" as const, std: 0.1 } } : spec);
  return {
    params: new Map(model.registry.params.map((spec) => [spec.name, initialize(widen(spec), rng)])),
    buffers: new Map(model.registry.buffers.map((spec) => [spec.name, initialize(spec, rng)])),
  };
}
