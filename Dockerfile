# agent-egress: the egress proxy as a small non-root image.
# Build:  docker build -t agent-egress .
# Run:    see docker-compose.yml (gateway pattern) and docs/deploy.md.

# --- build: compile TypeScript with the dev dependencies, which never reach the final image ---
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before the sources are copied; we compile below.
RUN npm ci --no-audit --no-fund --ignore-scripts && npm rebuild better-sqlite3
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json

# --- production dependencies only ---
FROM node:20-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm rebuild better-sqlite3 && npm cache clean --force

# --- runtime ---
FROM node:20-slim
# dumb-init as PID 1: forwards SIGTERM so the proxy drains, and reaps zombies. nftables: the same image
# applies the companion rules from a Kubernetes init container (deploy/kubernetes/transparent-sidecar.yaml).
RUN apt-get update \
 && apt-get install -y --no-install-recommends dumb-init nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /src/dist ./dist
COPY --chown=root:root package.json ./
COPY --chown=root:root bin ./bin
COPY --chown=root:root policies ./policies
# The decision store is the only place the proxy writes; everything else stays root-owned and read-only.
RUN mkdir -p /var/lib/agent-egress /etc/agent-egress && chown node:node /var/lib/agent-egress
VOLUME ["/var/lib/agent-egress"]
USER node
# 3128: the proxy agents use. 3129: admin API (health, metrics, decisions); never publish it beyond loopback.
EXPOSE 3128 3129
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:3129/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# A 4 MiB semi-space caps V8's young generation near 12 MiB (default 48): lower peak and after-load RSS
# (docs/performance.md, memory); the idle reclaim after load uses vm.measureMemory, which Node 20 flags as
# experimental once. bench/lib/proxy.mjs and `npm start` use the same flags.
ENTRYPOINT ["dumb-init", "--", "node", "--max-semi-space-size=4", "--disable-warning=ExperimentalWarning", "/app/bin/agent-egress.js"]
# Policies are mounted read-only at /etc/agent-egress (see docker-compose.yml).
CMD ["serve", "--listen", "0.0.0.0:3128", "--admin-listen", "0.0.0.0:3129", "--policy", "/etc/agent-egress/policy.yaml", "--data-dir", "/var/lib/agent-egress"]
