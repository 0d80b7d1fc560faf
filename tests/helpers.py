"""What the component tests share: one cached render per stack, one placeholder digest, and
readers for the objects they look at (a Deployment's container, its env, its ConfigMap)."""

from __future__ import annotations

import functools
from typing import Any

from tools.harness import Recording, Registered, run_program
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
