"""One migration run per image: the answer to risk 3 in docs/risks.md (migration races).

Several API replicas with `MIGRATE_ON_STARTUP=true` race each other. Here migrations run
once, in a Job that `pulumi up` creates and waits for before any Deployment changes; every
Deployment sets `MIGRATE_ON_STARTUP=false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import MIGRATION, content_hash, k8s_name, labels, name_of
from components.pod import (
    APP_SECRETS_IN_ENV,
    REPLACE_UNREADY,
    container_security,
    process_resources,
    run_once_job_spec,
    scanner_exceptions,
)
from components.process_env import PodEnvironment
from components.settings.processes import MigrationSettings
from components.settings.stack import StackIdentity

# Margin over activeDeadlineSeconds for pulling the image and scheduling the pod.
AWAIT_MARGIN_SECONDS = 300


@dataclass(frozen=True)
class MigrationJobArgs:
    stack: StackIdentity
    """Stack name and app version, for labels."""
    migration: MigrationSettings
    """Timeout, retries and resources."""
    namespace: pulumi.Input[str]
    """Namespace of the Job."""
    image: pulumi.Input[str]
    """Bundler image by digest; the same image the Deployments run."""
    pod: PodEnvironment
    """What the migration reads: the settings, DB_PASSWORD and the wallet file (the app's
    constants read it at import), plus pull secrets."""
    wait_for: Sequence[pulumi.Resource] = ()
    """What must be ready before migrating (the data services). Set on the Job itself:
    a component's `depends_on` is not inherited by its children."""


def job_name(image: str, object_names: list[str], migration: MigrationSettings) -> str:
    """Named after what it runs: an unchanged image and config give the same Job (no diff),
    a new image gives a new Job, which Pulumi creates and awaits as a fresh migration run."""
    m = migration.resources
    return k8s_name(
        "bundler-migrate",
        content_hash(
            [image, object_names, migration.timeout_seconds, migration.backoff_limit,
             m.cpu_request, m.cpu_limit, m.memory_request, m.memory_limit]
        ),
    )


class MigrationJob(pulumi.ComponentResource):
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: MigrationJobArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:MigrationJob", name, None, opts)
        m, pod = args.migration, args.pod
        meta_labels = labels(args.stack.stack, MIGRATION, args.stack.app_version)
        name_output = pulumi.Output.all(args.image, pod.object_names).apply(
            lambda v: job_name(v[0], v[1], m)
        )
        job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name_output,
                namespace=args.namespace,
                labels=meta_labels,
                annotations={**REPLACE_UNREADY, **(scanner_exceptions(APP_SECRETS_IN_ENV) or {})},
            ),
            spec=run_once_job_spec(
                pod_labels=meta_labels,
                backoff_limit=m.backoff_limit,
                deadline_seconds=m.timeout_seconds,
                image_pull_secrets=pod.image_pull_secrets,
                volumes=pod.volumes,
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="migrate",
                        image=args.image,
                        # args, not command: the image's dumb-init entrypoint stays PID 1.
                        args=["yarn", "db:migrate"],
                        # yarn writes its cache and rc files under HOME: keep them on /tmp,
                        # the root filesystem is read-only.
                        env=[
                            *pod.env,
                            k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
                            k8s.core.v1.EnvVarArgs(name="YARN_CACHE_FOLDER", value="/tmp/yarn-cache"),
                        ],
                        env_from=pod.env_from,
                        volume_mounts=pod.volume_mounts,
                        security_context=container_security(),
                        resources=process_resources(m.resources),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.wait_for),
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{m.timeout_seconds + AWAIT_MARGIN_SECONDS}s",
                    update=f"{m.timeout_seconds + AWAIT_MARGIN_SECONDS}s",
                ),
            ),
        )
        self.job_name = name_of(job)
        self.register_outputs({"job_name": self.job_name})
