# The serving image: the model package, the server and the runtime it loads; no trainer, no TF.js.
# Builds with the classic builder as well as BuildKit (no `# syntax=` line, no `RUN --mount`).
# BASE: any Debian bookworm image with Node ≥ 20.11 on PATH and a `node` user (uid 1000); the
# official image by default, a locally made one where no registry is reachable
# (scripts/container-base.sh).
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS deps
WORKDIR /app
# The toolchain hnswlib-node compiles with: it has no prebuilt binaries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# PEM files in deploy/ca-certificates/ are trusted by npm here, beside Node's own roots: the CA of
# a TLS-intercepting proxy, as corporate networks have. Only this stage sees them.
COPY deploy/ca-certificates/ /tmp/ca-certificates/
COPY package.json package-lock.json ./
# TF.js is a devDependency (training and tests). npm 10 ignores package.json's allowScripts, so
# onnxruntime-node's CUDA download is switched off here; other platforms' binaries are dropped.
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN set -- /tmp/ca-certificates/*.pem; \
    if [ -e "$1" ]; then cat "$@" > /tmp/extra-ca.pem && export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi; \
    npm ci --omit=dev --no-audit --no-fund \
 && find node_modules/onnxruntime-node/bin -mindepth 3 -maxdepth 3 ! -path "*/linux/$(node -p process.arch)" -exec rm -rf {} +

FROM ${BASE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY format ./format
COPY model ./model
COPY runtime ./runtime
COPY serve ./serve
COPY models ./models
RUN mkdir -p /data/gallery && chown node:node /data/gallery
USER node
EXPOSE 8080
# Mount your own packages over /app/models; a gallery persists under /data/gallery.
VOLUME ["/app/models", "/data/gallery"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:8080/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
# No gallery by default: a writable gallery on 0.0.0.0 needs a key (add `--gallery /data/gallery`,
# or `--gallery postgres://…` for replicas sharing one, and -e IJEPA_API_KEY=...). GPU serving
# (--device webgpu) also needs libvulkan1 and a GPU run with NVIDIA_DRIVER_CAPABILITIES including
# `graphics` (docs/gpu.md).
ENTRYPOINT ["node", "bin/ijepa.js", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--model", "models/cifar10-vit-tiny"]
