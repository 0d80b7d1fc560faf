"""What the component tests share: one cached render per stack, one placeholder digest, readers
for the objects they look at (a Deployment's container, its env, its ConfigMap), and the upstream
Dockerfile (from the offline copy, else as it is at the pinned commit)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from tools.harness import ROOT, Recording, Registered, run_program
from tools.render import PLACEHOLDER_DIGEST, manifest, promote_outputs

DEPLOYMENT, JOB, SECRET, CONFIG_MAP = (
    "kubernetes:apps/v1:Deployment",
    "kubernetes:batch/v1:Job",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:ConfigMap",
)
STACKS = ("dev", "local", "prod")
# What prod promotes: the placeholder digest the offline render gives the building stack.
PROMOTED = f"ghcr.io/example-org/ar-io-x402-bundler@{PLACEHOLDER_DIGEST}"
APP_PROCESSES = ("api", "workers", "admin")


def render(stack: str, **kwargs: Any) -> Recording:
    """A fresh render with overrides; prod promotes `PROMOTED` unless told otherwise."""
    kwargs.setdefault("stack_outputs", promote_outputs(stack))
    return run_program(stack, **kwargs)


@functools.cache
def recording(stack: str) -> Recording:
    """The stack as committed, rendered once per test session (read it, never change it)."""
    return render(stack)


def manifests(stack: str) -> list[dict[str, Any]]:
    rec = recording(stack)
    return [manifest(rec, r) for r in rec.resources if r.type.startswith("kubernetes:") and r.custom]


def deployment(rec: Recording, component: str) -> Registered:
    return rec.one(DEPLOYMENT, f"{component}-deployment")


def container(r: Registered) -> dict[str, Any]:
    containers = r.get("spec.template.spec.containers")
    assert len(containers) == 1
    return dict(containers[0])


def migration_job(rec: Recording) -> Registered:
    (job,) = [j for j in rec.of_type(JOB) if j.name == "migration-job"]
    return job


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in c.get("env", [])]
    # The API server keeps the last of two same-named entries, silently: never write two.
    assert len(names) == len(set(names)), f"duplicate env names in {c['name']}: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def secret_refs(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c.get("env", []) if "secretKeyRef" in (e.get("valueFrom") or {})}


def settings_map(rec: Recording, c: dict[str, Any]) -> dict[str, str]:
    """The ConfigMap a container reads through envFrom."""
    (source,) = c["envFrom"]
    name = source["configMapRef"]["name"]
    (cm,) = [r for r in rec.of_type(CONFIG_MAP) if rec.k8s_name(r) == name]
    return dict(cm.inputs["data"])


# Where the Makefile finds the offline copy (X402_UPSTREAM_SRC); a clone without it uses UPSTREAM_DOCKERFILE.
UPSTREAM_SRC = Path(os.environ.get("X402_UPSTREAM_SRC") or ROOT.parent / "shared/upstream/ar-io-x402-bundler")

# The upstream Dockerfile at 4c3bddc, for clones without the offline copy (comments trimmed).
UPSTREAM_DOCKERFILE = """\
# AR.IO Bundler Lite - Dockerfile
FROM node:20-alpine AS builder

WORKDIR /app

RUN apk add --no-cache \\
    python3 \\
    make \\
    g++ \\
    git \\
    openssl

COPY package.json yarn.lock ./
RUN yarn install --frozen-lockfile
COPY tsconfig.json ./
COPY src ./src
RUN yarn build
RUN find ./lib -name "*.d.ts" -delete && \\
    find ./lib -name "*.d.ts.map" -delete
RUN echo "Default admin password: $(openssl rand -hex 32)" > /tmp/admin-password.txt

FROM node:20-alpine

WORKDIR /app
RUN apk add --no-cache \\
    dumb-init \\
    openssl
RUN addgroup -g 1001 -S bundler && \\
    adduser -S bundler -u 1001 && \\
    chown bundler:bundler /app

COPY --chown=bundler:bundler package.json yarn.lock ./
COPY --chown=bundler:bundler --from=builder /app/lib ./lib
COPY --chown=bundler:bundler --from=builder /app/node_modules ./node_modules
COPY --chown=bundler:bundler .env.sample ./
COPY --chown=bundler:bundler admin-server.js ./
COPY --chown=bundler:bundler admin ./admin
COPY --chown=bundler:bundler ecosystem.config.js ./
COPY --chown=bundler:bundler docs ./docs

USER bundler
HEALTHCHECK --interval=30s --timeout=10s --start-period=40s --retries=3 \\
  CMD node -e "require('http').get('http://localhost:${PORT:-3001}/health', (r) => { \
process.exit(r.statusCode === 200 ? 0 : 1); })"
EXPOSE 3001
ENTRYPOINT ["/usr/bin/dumb-init", "--"]
CMD ["node", "lib/index.js"]
"""


def upstream_dockerfile() -> str:
    path = UPSTREAM_SRC / "Dockerfile"
    return path.read_text() if path.is_file() else UPSTREAM_DOCKERFILE
