"""Deep readiness, worker liveness and the API's drain: the scripts that run beside the app.

Upstream's `/health` says 200 while PostgreSQL is down (risk 10 in docs/risks.md). We cannot change the
app, so our own checks (`deep-check.js`, beside this file) ship in a ConfigMap mounted read-only
into every bundler pod. `probe-server.js`, preloaded into each bundler process (`NODE_OPTIONS`),
serves them on `DEEP_CHECK_PORT` and the kubelet asks over HTTP: the checks run in the app's own
process with its environment and its already-loaded client libraries, so a probe costs
milliseconds instead of starting node and loading three clients every period (the cost is
measured by bench/probe.py; why this design, in docs/architecture.md, "Deep probes"). Readiness is deep
(traffic and rollouts wait for working backends); liveness stays shallow, except the workers',
which proves the worker process answers and still holds a connection to the queue Redis: a
worker that silently lost Redis, or froze, is restarted; a database blip restarts nothing.

The same ConfigMap carries `graceful-shutdown.js`, which the API preloads too: the API installs
no SIGTERM handler, so without it an API pod under dumb-init would exit at once on SIGTERM and
cut the uploads in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import PROJECT, content_named, labels, name_of
from components.pod import http_probe
from components.settings.processes import ProbeSettings
from components.settings.stack import StackIdentity

SCRIPT = Path(__file__).with_name("deep-check.js")
SERVER_SCRIPT = Path(__file__).with_name("probe-server.js")
DRAIN_SCRIPT = Path(__file__).with_name("graceful-shutdown.js")
MOUNT_PATH = f"/opt/{PROJECT}-probes"
SCRIPT_PATH = f"{MOUNT_PATH}/deep-check.js"
SERVER_SCRIPT_PATH = f"{MOUNT_PATH}/probe-server.js"
DRAIN_SCRIPT_PATH = f"{MOUNT_PATH}/graceful-shutdown.js"
# Inside the pod only: no Service exposes it, and the NetworkPolicies admit no pod to it.
DEEP_CHECK_PORT = 9400
DEEP_CHECK_PATH = "/deep-check"
# The probe server listens first, so the drain (loaded after) does not count it as a server
# to wait for; the drain must load before the API's own code to see its listen().
PROBE_NODE_OPTIONS = f"--require {SERVER_SCRIPT_PATH}"
API_NODE_OPTIONS = f"{PROBE_NODE_OPTIONS} --require {DRAIN_SCRIPT_PATH}"
# The checks' own deadline ends before the kubelet's timeoutSeconds, so the answer (and its
# log line) is a 503 that says what failed, not a timeout that says nothing.
ANSWER_MARGIN_MS = 500


@dataclass(frozen=True)
class ProbeScriptArgs:
    stack: StackIdentity
    """Stack name and app version, for labels."""
    namespace: pulumi.Input[str]
    """Namespace of the ConfigMap."""


class ProbeScript(pulumi.ComponentResource):
    """The scripts that run in the bundler processes (the deep checks, the probe server that
    serves them, the API's drain preload), as one content-named ConfigMap: a changed script
    rolls the pods."""

    config_map_name: pulumi.Output[str]
    volume: k8s.core.v1.VolumeArgs
    volume_mount: k8s.core.v1.VolumeMountArgs

    def __init__(self, name: str, args: ProbeScriptArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:ProbeScript", name, None, opts)
        data = {script.name: script.read_text() for script in (SCRIPT, SERVER_SCRIPT, DRAIN_SCRIPT)}
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


def deep_check_path(checks: Sequence[str], timeout_seconds: int) -> str:
    timeout_ms = max(500, timeout_seconds * 1000 - ANSWER_MARGIN_MS)
    return f"{DEEP_CHECK_PATH}?checks={','.join(checks)}&timeout-ms={timeout_ms}"


def deep_probe(
    checks: Sequence[str], p: ProbeSettings, failure_threshold: Optional[int] = None
) -> k8s.core.v1.ProbeArgs:
    """The deep check over HTTP; a blip shorter than threshold x period never flips it."""
    return http_probe(
        deep_check_path(checks, p.timeout_seconds),
        DEEP_CHECK_PORT,
        p.period_seconds,
        p.timeout_seconds,
        failure_threshold or p.failure_threshold,
    )


# Readiness checks per process: what each needs to do useful work.
API_READINESS = ("postgres", "redis-cache", "redis-queue", "s3")
ADMIN_READINESS = ("postgres", "redis-cache", "redis-queue")
WORKER_READINESS = ("postgres", "redis-queue", "s3")
WORKER_LIVENESS = ("bullmq-worker",)
