"""Cross-cutting defaults written once: names, labels and the restricted security context.

Every workload, data service and Job takes its labels and security settings from here (the
Bitnami `common` chart idea), so the restricted Pod Security Standard is met in one place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

APP = "x402-bundler"
# uid/gid of the `bundler` user in the upstream image; the data services reuse it.
APP_UID = 1001

# Component label values; NetworkPolicies select on them.
API, WORKERS, ADMIN, MIGRATION = "api", "workers", "admin", "migration"
POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO, BUCKET_INIT = "postgres", "redis-cache", "redis-queue", "minio", "bucket-init"
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


def container_security(uid: int = APP_UID) -> k8s.core.v1.SecurityContextArgs:
    """The restricted Pod Security Standard for one container, read-only root included."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_security(uid: int = APP_UID) -> k8s.core.v1.PodSecurityContextArgs:
    """Pod-level restricted settings; fsGroup makes mounted Secrets and volumes usable by `uid`."""
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        fs_group=uid,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def resources(cpu_request: str, cpu_limit: str, memory_request: str, memory_limit: str) -> k8s.core.v1.ResourceRequirementsArgs:
    return k8s.core.v1.ResourceRequirementsArgs(
        requests={"cpu": cpu_request, "memory": memory_request},
        limits={"cpu": cpu_limit, "memory": memory_limit},
    )


# A failed one-shot Job is replaced on the next `up` (and so re-run) rather than kept as done.
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}


def run_once_job_spec(
    pod_labels: Mapping[str, str],
    containers: list[k8s.core.v1.ContainerArgs],
    volumes: list[k8s.core.v1.VolumeArgs],
    backoff_limit: int,
    deadline_seconds: int,
    image_pull_secrets: Optional[list[k8s.core.v1.LocalObjectReferenceArgs]] = None,
) -> k8s.batch.v1.JobSpecArgs:
    """The spec of a Job that runs once: never restarted in place, no API token, no service links.

    No ttlSecondsAfterFinished, on purpose: a Job deleted by the TTL controller is drift;
    `pulumi refresh` drops it from state and the next `up` re-creates it, which re-runs it and
    blocks everything that depends on it.
    """
    return k8s.batch.v1.JobSpecArgs(
        backoff_limit=backoff_limit,
        active_deadline_seconds=deadline_seconds,
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=dict(pod_labels)),
            spec=k8s.core.v1.PodSpecArgs(
                restart_policy="Never",
                automount_service_account_token=False,
                enable_service_links=False,
                security_context=pod_security(),
                image_pull_secrets=image_pull_secrets,
                volumes=volumes,
                containers=containers,
            ),
        ),
    )
