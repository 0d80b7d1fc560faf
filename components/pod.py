"""What every pod here has, written once: the restricted security context, no service-account
token, no service links, resources, probes (exec, HTTP, TCP), secret env and run-once Jobs.

Every workload, data service and Job builds its pod from these (the Bitnami `common` chart
idea), so the restricted Pod Security Standard is met in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.settings.processes import ProcessSettings

# The uid/gid every bundler container runs as, not the image's `bundler` (1001): at 10000 or above
# it matches no account on a node, should a process ever leave its container (checkov CKV_K8S_40).
# It needs nothing from the image's user: /app is world-readable (files 0644, directories 0755, as
# COPY keeps them) and nothing writes there; the writable paths are emptyDirs, and the wallet
# Secret file reaches it through fsGroup. MinIO and mc run as any uid and reuse it.
APP_UID = 10001
# A failed one-shot Job is replaced on the next `up` (and so re-run) rather than kept as done.
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}


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


def pod_spec(
    containers: list[k8s.core.v1.ContainerArgs],
    volumes: Optional[list[k8s.core.v1.VolumeArgs]] = None,
    uid: int = APP_UID,
    image_pull_secrets: Optional[list[k8s.core.v1.LocalObjectReferenceArgs]] = None,
    restart_policy: Optional[str] = None,
    termination_grace_period_seconds: Optional[int] = None,
    topology_spread_constraints: Optional[list[k8s.core.v1.TopologySpreadConstraintArgs]] = None,
) -> k8s.core.v1.PodSpecArgs:
    """A restricted pod with no API token (nothing here calls the Kubernetes API) and no
    service links, which would inject <SERVICE>_PORT-style variables that can shadow the app's
    own settings."""
    return k8s.core.v1.PodSpecArgs(
        restart_policy=restart_policy,
        automount_service_account_token=False,
        enable_service_links=False,
        security_context=pod_security(uid),
        image_pull_secrets=image_pull_secrets,
        termination_grace_period_seconds=termination_grace_period_seconds,
        topology_spread_constraints=topology_spread_constraints,
        volumes=volumes,
        containers=containers,
    )


def resources(
    cpu_request: str, cpu_limit: str, memory_request: str, memory_limit: str
) -> k8s.core.v1.ResourceRequirementsArgs:
    return k8s.core.v1.ResourceRequirementsArgs(
        requests={"cpu": cpu_request, "memory": memory_request},
        limits={"cpu": cpu_limit, "memory": memory_limit},
    )


def process_resources(p: ProcessSettings) -> k8s.core.v1.ResourceRequirementsArgs:
    """A bundler process's requests and limits, as its settings give them."""
    return resources(p.cpu_request, p.cpu_limit, p.memory_request, p.memory_limit)


def exec_probe(
    command: list[str], period: int, timeout: int, failures: int, success_threshold: Optional[int] = None
) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        exec_=k8s.core.v1.ExecActionArgs(command=command),
        period_seconds=period,
        timeout_seconds=timeout,
        failure_threshold=failures,
        success_threshold=success_threshold,
    )


def http_probe(path: str, port: int, period: int, timeout: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port),
        period_seconds=period,
        timeout_seconds=timeout,
        failure_threshold=failures,
    )


def tcp_probe(port: int, period: int, timeout: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=port),
        period_seconds=period,
        timeout_seconds=timeout,
        failure_threshold=failures,
    )


def secret_env(name: str, secret: pulumi.Input[str], key: str) -> k8s.core.v1.EnvVarArgs:
    """An env var read from one key of a Secret: the value is never in the pod spec."""
    return k8s.core.v1.EnvVarArgs(
        name=name,
        value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key)),
    )


def run_once_job_spec(
    pod_labels: Mapping[str, str],
    containers: list[k8s.core.v1.ContainerArgs],
    volumes: list[k8s.core.v1.VolumeArgs],
    backoff_limit: int,
    deadline_seconds: int,
    image_pull_secrets: Optional[list[k8s.core.v1.LocalObjectReferenceArgs]] = None,
) -> k8s.batch.v1.JobSpecArgs:
    """The spec of a Job that runs once: never restarted in place.

    No ttlSecondsAfterFinished, on purpose: a Job deleted by the TTL controller is drift;
    `pulumi refresh` drops it from state and the next `up` re-creates it, which re-runs it and
    blocks everything that depends on it.
    """
    return k8s.batch.v1.JobSpecArgs(
        backoff_limit=backoff_limit,
        active_deadline_seconds=deadline_seconds,
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=dict(pod_labels)),
            spec=pod_spec(containers, volumes, image_pull_secrets=image_pull_secrets, restart_policy="Never"),
        ),
    )


# Findings of checkov's Kubernetes checks that stand, each with why; docs/security.md lists them and
# tests/test_security_scan.py keeps the two in step. The reasons are one line and hold no '=':
# checkov splits the annotation's value at '=' into exactly two parts.
APP_SECRETS_IN_ENV = (
    "CKV_K8S_35",
    "the bundler reads DB_PASSWORD, ELASTICACHE_PASSWORD, its S3 keys, ADMIN_PASSWORD and its CDP API key only "
    "from process.env (its code has no file variant); a shell wrapper exporting files into the environment would "
    "satisfy the scanner without reducing the exposure; its wallets, which it reads from files, are files",
)


def scanner_exceptions(*exceptions: tuple[str, str]) -> Optional[dict[str, str]]:
    """checkov's own suppression annotations, `checkov.io/skip<N>: CKV_K8S_xx=<reason>`.

    checkov reads them from the top-level object's metadata only (a Deployment's, a Job's, a
    StatefulSet's); on the pod template they are ignored, so they go on the object itself.
    """
    for check, reason in exceptions:
        if "=" in reason or "\n" in reason or not reason.strip():
            raise ValueError(f"{check}: checkov needs a one-line reason without '=': {reason!r}")
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(exceptions, 1)} or None
