"""Names and labels: what every object this program creates is called and labelled.

The project name, the component label values the NetworkPolicies select on, the DNS-safe name
builder and content-derived names all live here, so a name is never spelled twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

import pulumi
import pulumi_kubernetes as k8s

# The Pulumi project, the config namespace of every key, and the app's name in labels.
PROJECT = "x402-bundler"
APP = PROJECT

# Component label values; NetworkPolicies select on them.
API, WORKERS, ADMIN, MIGRATION = "api", "workers", "admin", "migration"
POSTGRES, REDIS_CACHE, REDIS_QUEUE = "postgres", "redis-cache", "redis-queue"
MINIO, BUCKET_INIT = "minio", "bucket-init"
BUNDLER_COMPONENTS = (API, WORKERS, ADMIN, MIGRATION)
DATA_COMPONENTS = (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO)


def k8s_name(*parts: str) -> str:
    """A DNS-1123 name from parts, capped at 63 characters with a stable hash suffix."""
    name = "-".join(p.strip("-").lower() for p in parts if p)
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def instance(stack: str) -> str:
    return f"{APP}-{stack}"


def selector_labels(stack: str, component: str) -> dict[str, str]:
    """The stable subset used in selectors: a selector can never change after creation."""
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/instance": instance(stack),
        "app.kubernetes.io/component": component,
    }


def labels(stack: str, component: str, version: str) -> dict[str, str]:
    """The Kubernetes recommended labels, used on every object this program creates."""
    return {
        **selector_labels(stack, component),
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/version": version[:63],
    }


def content_hash(data: Any) -> str:
    """Short, stable hash of JSON-able content (for names that change when content changes)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def content_named(base: str, data: pulumi.Input[Mapping[str, Any]]) -> pulumi.Output[str]:
    """`<base>-<hash of data>`: a new object name whenever the content changes.

    Why: pods read Secrets and ConfigMaps only at start, so a changed value must reach them
    as a changed pod template. Naming the object after its content makes the change a new
    object that every consumer's pod template points to, so Pulumi rolls exactly the pods that
    use it, creates the new object before deleting the old one, and shows it in `preview`.
    The 10-hex-digit hash of a whole object reveals nothing usable about a secret in it, so
    the name is deliberately not marked secret.
    """
    return pulumi.Output.unsecret(pulumi.Output.from_input(data).apply(lambda d: k8s_name(base, content_hash(d))))


class _Named(Protocol):
    @property
    def metadata(self) -> pulumi.Output[k8s.meta.v1.outputs.ObjectMeta]: ...


def name_of(resource: _Named) -> pulumi.Output[str]:
    """The Kubernetes name of a registered object, once the cluster (or preview) knows it."""
    return resource.metadata.apply(lambda m: str(m.name))
