# syntax=docker/dockerfile:1.7
# The PoseLoop trainer with its PyTorch engine, for NVIDIA GPU nodes. Build from the repository root (the
# build context must be the whole workspace):
#
#   docker build -f deploy/docker/trainer-gpu.Dockerfile -t poseloop/trainer-gpu:0.1.0 .
#
# The runtime stage is PyTorch's own CUDA runtime image: torch, CUDA, cuDNN and NCCL come as PyTorch built and
# tested them together, and only Node and the trainer are added. Node is copied from Node's image (the same
# build the CPU image runs) instead of installed from a package repository. The TypeScript is built exactly as
# deploy/docker/trainer.Dockerfile builds it; the stages up to `assemble` are the same.
#
# The image runs every engine: `TRAIN.ENGINE: pytorch` on `cuda`/`cuda:N` (or `cpu`), and the onnxruntime
# engine on `cpu` and `webgpu` (Vulkan, as in trainer.Dockerfile's CUDA variant).
#
# deploy/docker/trainer-gpu.Dockerfile.dockerignore trims the build context (BuildKit reads it next to this
# file).

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
# A tag that names torch, CUDA and cuDNN. CUDA 12.4 needs an NVIDIA driver >= 550 (>= 525 with CUDA's minor
# version compatibility); pick an older CUDA tag for older drivers.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

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

# node_modules + each needed workspace's package.json and dist/, plus the engine's Python package where the
# repository has it (services/trainer/pytorch), nothing else.
FROM node AS assemble
RUN --mount=type=bind,from=prod-deps,source=/src,target=/deps \
    --mount=type=bind,from=build,source=/src,target=/build \
    node /build/deploy/docker/assemble-runtime.mjs --service services/trainer --deps /deps --build /build --out /app
COPY deploy/docker/grpc-health-check.mjs /app/bin/grpc-health-check.mjs
COPY services/trainer/pytorch/poseloop_torch/ /app/services/trainer/pytorch/poseloop_torch/

FROM ${PYTORCH_IMAGE} AS runtime
LABEL org.opencontainers.image.title="poseloop-trainer-gpu" \
      org.opencontainers.image.description="Trains keypoint models over gRPC, on NVIDIA GPUs with PyTorch, and publishes them to the NATS model registry" \
      org.opencontainers.image.licenses="Apache-2.0"
# libvulkan1: the loader onnxruntime's WebGPU provider (Dawn) needs, for jobs that ask the onnxruntime engine
# for `webgpu` on this node.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libvulkan1 \
 && rm -rf /var/lib/apt/lists/* \
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
# POSELOOP_PYTHON: the base image's Python (conda), the one that has torch; the trainer would otherwise look
# for python3 on PATH, which finds the same one here, but naming it keeps a base-image change from silently
# switching interpreters. PYTHONPATH: the trainer puts the engine there itself; set here too so that
# `docker run --entrypoint python3 <image> -m poseloop_torch --probe` checks an image by hand.
# CUDA_CACHE_PATH: kernels JIT-compiled from PTX (GPUs newer than torch's prebuilt ones) are cached for the
# next job on the writable /tmp; the default, under $HOME, does not exist for the service user.
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    POSELOOP_PYTHON=/opt/conda/bin/python3 \
    PYTHONPATH=/app/services/trainer/pytorch \
    PYTHONDONTWRITEBYTECODE=1 \
    CUDA_CACHE_PATH=/tmp/cuda-cache
# Bytecode compiled now, since the read-only code cannot be cached at run time; and a base image whose
# Python cannot import torch or the engine fails here, not at the first job.
# Pillow decodes the images of the engine's own data loader (TRAIN.DATA_LOADER engine, the default on cuda);
# PyTorch's images ship it with torchvision, and a base image without it gets the pinned one.
RUN "$POSELOOP_PYTHON" -c 'import PIL' 2>/dev/null || "$POSELOOP_PYTHON" -m pip install --no-cache-dir pillow==11.1.0
RUN "$POSELOOP_PYTHON" -m compileall -q services/trainer/pytorch/poseloop_torch \
 && "$POSELOOP_PYTHON" -c 'import torch, PIL, poseloop_torch.data.loader; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
USER 10001:10001
EXPOSE 50052
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 directly; compose runs bin/grpc-health-check.mjs.
ENTRYPOINT ["node", "services/trainer/dist/main.js"]
