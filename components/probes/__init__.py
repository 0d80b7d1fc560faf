"""Deep readiness, worker liveness and the API's drain: the scripts that run beside the app.

Upstream's `/health` says 200 while PostgreSQL is down (risk 10 in docs/risks.md). We cannot change the
app, so our own script (`deep-check.js`, beside this file) ships in a ConfigMap, is mounted
read-only into every bundler pod and runs as an `exec` probe with the app's own environment.
Readiness is deep (traffic and rollouts wait for working backends); liveness stays shallow,
except the workers', which proves the worker process is running and still holds a connection
to the queue Redis: a worker that silently lost Redis is restarted, a database blip restarts
nothing.

The same ConfigMap carries `graceful-shutdown.js`, which the API preloads (`NODE_OPTIONS`):
the API installs no SIGTERM handler, so without it an API pod under dumb-init would exit at
once on SIGTERM and cut the uploads in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import PROJECT, content_named, labels, name_of
from components.pod import exec_probe
from components.settings.processes import ProbeSettings
from components.settings.stack import StackIdentity

SCRIPT = Path(__file__).with_name("deep-check.js")
DRAIN_SCRIPT = Path(__file__).with_name("graceful-shutdown.js")
MOUNT_PATH = f"/opt/{PROJECT}-probes"
SCRIPT_PATH = f"{MOUNT_PATH}/deep-check.js"
DRAIN_SCRIPT_PATH = f"{MOUNT_PATH}/graceful-shutdown.js"
# Loaded before the API's own code, so its http.Server is tracked from the first listen().
DRAIN_NODE_OPTIONS = f"--require {DRAIN_SCRIPT_PATH}"
# Node needs about a second to start and load the clients; the script's own deadline leaves
# it that, so the probe ends (and reports) before the kubelet's timeoutSeconds kills it.
NODE_START_MS = 1000


@dataclass(frozen=True)
class ProbeScriptArgs:
    stack: StackIdentity
    """Stack name and app version, for labels."""
    namespace: pulumi.Input[str]
    """Namespace of the ConfigMap."""


class ProbeScript(pulumi.ComponentResource):
    """The scripts the kubelet and the pods run beside the app (the deep check and the API's
    drain preload), as one content-named ConfigMap: a changed script rolls the pods."""

    config_map_name: pulumi.Output[str]
    volume: k8s.core.v1.VolumeArgs
    volume_mount: k8s.core.v1.VolumeMountArgs

    def __init__(self, name: str, args: ProbeScriptArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:ProbeScript", name, None, opts)
        data = {"deep-check.js": SCRIPT.read_text(), "graceful-shutdown.js": DRAIN_SCRIPT.read_text()}
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-script",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=content_named("bundler-probes", data),
                namespace=args.namespace,
                labels=labels(args.stack.stack, "probes", args.stack.app_version),
            ),
            data=data,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.config_map_name = name_of(config_map)
        self.volume = k8s.core.v1.VolumeArgs(
            name="probes",
            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=self.config_map_name, default_mode=0o444),
        )
        self.volume_mount = k8s.core.v1.VolumeMountArgs(name="probes", mount_path=MOUNT_PATH, read_only=True)
        self.register_outputs({"config_map_name": self.config_map_name})


def deep_check_command(checks: Sequence[str], timeout_seconds: int) -> list[str]:
    timeout_ms = max(500, timeout_seconds * 1000 - NODE_START_MS)
    return ["node", SCRIPT_PATH, "--checks", ",".join(checks), "--timeout-ms", str(timeout_ms)]


def deep_probe(
    checks: Sequence[str], p: ProbeSettings, failure_threshold: Optional[int] = None
) -> k8s.core.v1.ProbeArgs:
    """An exec probe running the deep check; a blip shorter than threshold x period never flips it."""
    return exec_probe(
        deep_check_command(checks, p.timeout_seconds),
        p.period_seconds,
        p.timeout_seconds,
        failure_threshold or p.failure_threshold,
        success_threshold=1,
    )


# Readiness checks per process: what each needs to do useful work.
API_READINESS = ("postgres", "redis-cache", "redis-queue", "s3")
ADMIN_READINESS = ("postgres", "redis-cache", "redis-queue")
WORKER_READINESS = ("postgres", "redis-queue", "s3")
WORKER_LIVENESS = ("bullmq-worker",)
