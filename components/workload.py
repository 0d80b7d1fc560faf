"""A bundler process (API, workers or admin): one reusable component, used three times.

Answers the rollout half of risk 10 in docs/risks.md and upstream's traps: the API runs
`node lib/index.js` (`lib/server.js` never listens) with `PORT` set explicitly (the code's
default is 3000), rollouts never drop below the desired ready count, and an API pod is given
time to finish uploads in flight before it is stopped.

Each process is given as `args`, never `command`: `command` would replace the image's
`dumb-init --` entrypoint and leave node as PID 1, which ignores SIGTERM without a handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import ADMIN, API, WORKERS, k8s_name, labels, name_of, selector_labels
from components.pod import (
    APP_SECRETS_IN_ENV,
    container_security,
    exec_probe,
    http_probe,
    pod_spec,
    process_resources,
    scanner_exceptions,
    tcp_probe,
)
from components.probes import (
    ADMIN_READINESS,
    API_NODE_OPTIONS,
    API_READINESS,
    DEEP_CHECK_PORT,
    PROBE_NODE_OPTIONS,
    WORKER_LIVENESS,
    WORKER_READINESS,
    deep_probe,
)
from components.process_env import PodEnvironment
from components.settings.processes import MAX_SURGE, ProbeSettings, ProcessesSettings, ProcessSettings
from components.settings.stack import StackIdentity

METRICS_PATH = "/bundler_metrics"


@dataclass(frozen=True)
class ProcessSpec:
    """What differs between the three processes; everything else is shared."""

    component: str
    args: tuple[str, ...]
    """The image's CMD replaced; its ENTRYPOINT (dumb-init) is kept."""
    resources: ProcessSettings
    port: Optional[int]
    startup_probe: k8s.core.v1.ProbeArgs
    liveness_probe: k8s.core.v1.ProbeArgs
    readiness_probe: k8s.core.v1.ProbeArgs
    grace_period_seconds: int
    pre_stop_seconds: int = 0
    env: tuple[tuple[str, str], ...] = field(default=())
    disruption_budget: bool = False
    metrics: bool = False


def _http(path: str, port: int, p: ProbeSettings, failure_threshold: int) -> k8s.core.v1.ProbeArgs:
    return http_probe(path, port, p.period_seconds, p.timeout_seconds, failure_threshold)


def _tcp(port: int, p: ProbeSettings, failure_threshold: int) -> k8s.core.v1.ProbeArgs:
    return tcp_probe(port, p.period_seconds, p.timeout_seconds, failure_threshold)


def _worker_process_alive(p: ProbeSettings) -> k8s.core.v1.ProbeArgs:
    # The workers listen on nothing; the shallowest meaningful start-up signal is that the
    # worker entrypoint is running (busybox pgrep is in the image). Anchored, so dumb-init
    # (PID 1, whose command line ends with the same words) does not count as the worker.
    return exec_probe(["pgrep", "-f", "^node lib/jobs/allWorkers.js"], 5, p.timeout_seconds, 12)


# Every bundler process serves its own deep checks (components/probes/probe-server.js).
_PROBE_ENV = (("DEEP_CHECK_PORT", str(DEEP_CHECK_PORT)),)

# Start-up allowance: 30 x period, so a slow first boot is not killed by liveness.
STARTUP_FAILURES = 30


def process_specs(s: ProcessesSettings) -> list[ProcessSpec]:
    """API, workers and admin. Liveness never touches PostgreSQL: a database blip must not
    restart pods; readiness is the deep check."""
    p = s.probes
    return [
        ProcessSpec(
            component=API,
            args=("node", "lib/index.js"),
            resources=s.api,
            port=s.api_port,
            # The API alone needs the drain preload: workers and admin handle SIGTERM.
            env=(("PORT", str(s.api_port)), ("NODE_OPTIONS", API_NODE_OPTIONS), *_PROBE_ENV),
            startup_probe=_http("/health", s.api_port, p, STARTUP_FAILURES),
            liveness_probe=_http("/health", s.api_port, p, p.failure_threshold),
            readiness_probe=deep_probe(API_READINESS, p),
            grace_period_seconds=s.api_grace_period_seconds,
            pre_stop_seconds=s.api_pre_stop_seconds,
            disruption_budget=s.api.replicas > 1,
            metrics=True,
        ),
        ProcessSpec(
            component=WORKERS,
            args=("node", "lib/jobs/allWorkers.js"),
            resources=s.workers,
            port=None,
            env=(("NODE_OPTIONS", PROBE_NODE_OPTIONS), *_PROBE_ENV),
            startup_probe=_worker_process_alive(p),
            liveness_probe=deep_probe(WORKER_LIVENESS, p, failure_threshold=p.worker_liveness_failure_threshold),
            readiness_probe=deep_probe(WORKER_READINESS, p),
            grace_period_seconds=s.worker_grace_period_seconds,
        ),
        ProcessSpec(
            component=ADMIN,
            args=("node", "admin-server.js"),
            resources=s.admin,
            port=s.admin_port,
            env=(("NODE_OPTIONS", PROBE_NODE_OPTIONS), *_PROBE_ENV),
            startup_probe=_tcp(s.admin_port, p, STARTUP_FAILURES),
            liveness_probe=_tcp(s.admin_port, p, p.failure_threshold),
            readiness_probe=deep_probe(ADMIN_READINESS, p),
            grace_period_seconds=30,
            disruption_budget=s.admin.replicas > 1,
        ),
    ]


@dataclass(frozen=True)
class BundlerProcessArgs:
    stack: StackIdentity
    """Stack name and app version for labels; prod spreads pods across nodes."""
    namespace: pulumi.Input[str]
    """Namespace of every object created here."""
    image: pulumi.Input[str]
    """Bundler image by digest."""
    pod: PodEnvironment
    """Shared env, mounts, volumes and pull secrets."""
    spec: ProcessSpec
    """What this process runs and how it is probed."""
    wait_for: Sequence[pulumi.Resource] = ()
    """Created only after these (the migration Job). Set on the Deployment itself: a
    component's `depends_on` is not inherited by its children."""


class BundlerProcess(pulumi.ComponentResource):
    """Deployment, plus Service and PodDisruptionBudget where the process needs them."""

    deployment: k8s.apps.v1.Deployment
    service_name: Optional[pulumi.Output[str]]
    internal_url: Optional[pulumi.Output[str]]
    port: Optional[int]

    def __init__(self, name: str, args: BundlerProcessArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:BundlerProcess", name, None, opts)
        stack, spec, pod = args.stack, args.spec, args.pod
        child = pulumi.ResourceOptions(parent=self)
        object_name = k8s_name("bundler", spec.component)
        meta_labels = labels(stack.stack, spec.component, stack.app_version)
        selector = selector_labels(stack.stack, spec.component)
        self.port = spec.port

        annotations: dict[str, str] = {}
        if spec.metrics and spec.port:
            annotations = {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.port),
                "prometheus.io/path": METRICS_PATH,
            }

        container = k8s.core.v1.ContainerArgs(
            name=spec.component,
            image=args.image,
            args=list(spec.args),
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=spec.port)] if spec.port else None,
            env=[*pod.env, *(k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in spec.env)],
            env_from=pod.env_from,
            volume_mounts=pod.volume_mounts,
            security_context=container_security(),
            resources=process_resources(spec.resources),
            startup_probe=spec.startup_probe,
            liveness_probe=spec.liveness_probe,
            readiness_probe=spec.readiness_probe,
            # The endpoints controller needs a moment to stop routing to a terminating pod;
            # sleeping first means no new upload lands on a pod that is shutting down. SIGTERM
            # then starts the drain (graceful-shutdown.js), which exits once requests finish.
            lifecycle=k8s.core.v1.LifecycleArgs(
                pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                    exec_=k8s.core.v1.ExecActionArgs(command=["sleep", str(spec.pre_stop_seconds)])
                )
            )
            if spec.pre_stop_seconds
            else None,
        )

        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=args.namespace, labels=meta_labels,
                annotations=scanner_exceptions(APP_SECRETS_IN_ENV),
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=spec.resources.replicas,
                revision_history_limit=5,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                # Never below the desired ready count: a new pod must pass the deep readiness
                # check before an old one is stopped.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=MAX_SURGE),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=meta_labels, annotations=annotations or None),
                    spec=pod_spec(
                        [container],
                        pod.volumes,
                        image_pull_secrets=pod.image_pull_secrets,
                        termination_grace_period_seconds=spec.grace_period_seconds,
                        topology_spread_constraints=_spread(selector) if stack.is_prod else None,
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.wait_for)),
        )

        self.service_name = None
        self.internal_url = None
        if spec.port:
            service = k8s.core.v1.Service(
                f"{name}-service",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.namespace, labels=meta_labels),
                spec=k8s.core.v1.ServiceSpecArgs(
                    type="ClusterIP",
                    selector=selector,
                    ports=[k8s.core.v1.ServicePortArgs(name="http", port=spec.port, target_port="http")],
                ),
                opts=child,
            )
            self.service_name = name_of(service)
            port = spec.port
            self.internal_url = pulumi.Output.all(self.service_name, args.namespace).apply(
                lambda v: f"http://{v[0]}.{v[1]}.svc.cluster.local:{port}"
            )

        if spec.disruption_budget:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.namespace, labels=meta_labels),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                    max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector)
                ),
                opts=child,
            )

        self.register_outputs({"service_name": self.service_name, "internal_url": self.internal_url})


def _spread(selector: dict[str, str]) -> list[k8s.core.v1.TopologySpreadConstraintArgs]:
    """Strictly across nodes, so one node's loss never takes every replica; across zones
    where the cluster has them, best effort so a single-zone cluster still schedules."""
    return [
        k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key=key,
            when_unsatisfiable=when,
            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
        )
        for key, when in (
            ("kubernetes.io/hostname", "DoNotSchedule"),
            ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        )
    ]
