# syntax=docker/dockerfile:1.7
# The PoseLoop trainer. Build from the repository root (the build context must be the whole workspace):
#
#   docker build -f deploy/docker/trainer.Dockerfile -t poseloop/trainer:0.1.0 .
#
# GPU nodes: deploy/docker/trainer-gpu.Dockerfile adds the PyTorch engine (TRAIN.ENGINE: pytorch). For the
# onnxruntime engine alone, run on an NVIDIA CUDA runtime image instead of Node's slim image (Node itself is
# copied in):
#
#   docker build -f deploy/docker/trainer.Dockerfile \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 -t poseloop/trainer:0.1.0-cuda .
#
# onnxruntime-node bundles the CPU and WebGPU execution providers; WebGPU reaches the GPU through Vulkan, so
# the runtime stage installs the Vulkan loader and asks the NVIDIA container runtime for the "graphics"
# driver capability (which mounts the driver's Vulkan ICD). The CUDA provider's libraries are not part of
# the npm package (.npmrc skips their download), so CUDA-only nodes need them installed on top.
#
# deploy/docker/trainer.Dockerfile.dockerignore trims the build context (BuildKit reads it next to this file).

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG RUNTIME_IMAGE=${NODE_IMAGE}

FROM ${NODE_IMAGE} AS node

# The npm manifests alone, so that the `npm ci` layers below stay cached while only sources change.
FROM node AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -type f \( -name package.json -o -name package-lock.json -o -name .npmrc \) -print0 \
  | tar --null --files-from=- --create --file=- \
  | tar --extract --file=- --directory=/manifests

# Every workspace's dependencies (dev included), then the TypeScript build of the trainer and the packages
# it references. `npm ci` honours the repository's .npmrc.
FROM node AS build
WORKDIR /src
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked npm ci
COPY . .
RUN npm run build -- services/trainer

# Production dependencies of the trainer workspace only.
FROM node AS prod-deps
WORKDIR /src
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked npm ci --omit=dev --workspace services/trainer

# node_modules + each needed workspace's package.json and dist/, nothing else.
FROM node AS assemble
RUN --mount=type=bind,from=prod-deps,source=/src,target=/deps \
    --mount=type=bind,from=build,source=/src,target=/build \
    node /build/deploy/docker/assemble-runtime.mjs --service services/trainer --deps /deps --build /build --out /app
COPY deploy/docker/grpc-health-check.mjs /app/bin/grpc-health-check.mjs

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="poseloop-trainer" \
      org.opencontainers.image.description="Trains keypoint models over gRPC and publishes them to the NATS model registry" \
      org.opencontainers.image.licenses="Apache-2.0"
# libvulkan1: the loader onnxruntime's WebGPU provider (Dawn) needs on GPU nodes; harmless on CPU.
# npm, npx, corepack and yarn are removed: the image runs one prebuilt program and installs nothing.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libvulkan1 \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
           /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* \
 && groupadd --system --gid 10001 poseloop \
 && useradd --system --uid 10001 --gid poseloop --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin poseloop \
 && mkdir -p /var/lib/poseloop/work /var/lib/poseloop/data \
 && chown -R 10001:10001 /var/lib/poseloop
# The root filesystem is read-only at run time: work and data are volumes, which Docker creates with the
# owner of these folders, so the service user can write them.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
# Owned by root and read-only to the service user: the process cannot rewrite its own code.
COPY --from=assemble /app/ ./
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
USER 10001:10001
EXPOSE 50052
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 directly; compose runs bin/grpc-health-check.mjs.
ENTRYPOINT ["node", "services/trainer/dist/main.js"]
