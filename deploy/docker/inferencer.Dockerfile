# syntax=docker/dockerfile:1.7
# The PoseLoop inferencer. Build from the repository root (the build context must be the whole workspace):
#
#   docker build -f deploy/docker/inferencer.Dockerfile -t poseloop/inferencer:0.1.0 .
#
# It serves int8 ONNX models on onnxruntime's CPU execution provider, so it runs on Node's slim image.
# deploy/docker/inferencer.Dockerfile.dockerignore trims the build context (BuildKit reads it next to this
# file).

ARG NODE_IMAGE=node:20.20.2-bookworm-slim

FROM ${NODE_IMAGE} AS node

# The npm manifests alone, so that the `npm ci` layers below stay cached while only sources change.
FROM node AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -type f \( -name package.json -o -name package-lock.json -o -name .npmrc \) -print0 \
  | tar --null --files-from=- --create --file=- \
  | tar --extract --file=- --directory=/manifests

# Every workspace's dependencies (dev included), then the TypeScript build of the inferencer and the
# packages it references. `npm ci` honours the repository's .npmrc.
FROM node AS build
WORKDIR /src
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked npm ci
COPY . .
RUN npm run build -- services/inferencer

# Production dependencies of the inferencer workspace only.
FROM node AS prod-deps
WORKDIR /src
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked npm ci --omit=dev --workspace services/inferencer

# node_modules + each needed workspace's package.json and dist/, nothing else.
FROM node AS assemble
RUN --mount=type=bind,from=prod-deps,source=/src,target=/deps \
    --mount=type=bind,from=build,source=/src,target=/build \
    node /build/deploy/docker/assemble-runtime.mjs --service services/inferencer --deps /deps --build /build --out /app
COPY deploy/docker/grpc-health-check.mjs /app/bin/grpc-health-check.mjs

FROM node AS runtime
LABEL org.opencontainers.image.title="poseloop-inferencer" \
      org.opencontainers.image.description="Streams keypoints for video frames over gRPC with hot-swapped int8 ONNX models" \
      org.opencontainers.image.licenses="Apache-2.0"
# npm, npx, corepack and yarn are removed: the image runs one prebuilt program and installs nothing.
RUN rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
           /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* \
 && groupadd --system --gid 10001 poseloop \
 && useradd --system --uid 10001 --gid poseloop --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin poseloop
WORKDIR /app
# Owned by root and read-only to the service user: the process cannot rewrite its own code.
COPY --from=assemble /app/ ./
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps
USER 10001:10001
EXPOSE 50051
# No HEALTHCHECK: Kubernetes probes grpc.health.v1 directly; compose runs bin/grpc-health-check.mjs.
ENTRYPOINT ["node", "services/inferencer/dist/main.js"]
