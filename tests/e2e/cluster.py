"""A cluster of one node for one stack: its objects, where its pods live, and what they can reach.

`Cluster` plans each workload's pods (names and addresses known before anything starts, so the
hosts file can name every Service), admits each pod against the namespace's Pod Security level
(refused: `FailedCreate`), pulls its images from the runner's registry, gives it its node-side
files (passwd, group, hosts, resolv.conf), and answers the scenarios' queries. The controllers
that create workloads in order and replace what is lost are `tests.e2e.controllers`'.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tests.e2e import controllers
from tests.e2e.admission import admit
from tests.e2e.images import Image, ImageSet
from tests.e2e.kubelet import Events, Pod, PodSetup
from tests.e2e.limits import Cgroup
from tests.e2e.network import StackNetwork
from tests.e2e.objects import WORKLOADS, LiveObject, Planned, Workload, live_objects, matches, object_store
from tests.e2e.registry import Registry
from tests.e2e.services import Services
from tests.e2e.usage import Meter
from tools.harness import Recording


@dataclass
class Node:
    """What the stack's node provides to the pods it runs."""

    net: StackNetwork
    root: Path
    images: ImageSet
    registry: Registry
    events: Events
    cgroup: Cgroup
    meter: Meter


class Cluster:
    def __init__(self, stack: str, rec: Recording, node: Node, outside_hosts: dict[str, str]) -> None:
        self.stack = stack
        self.rec = rec
        self.node = node
        self.net = node.net
        self.root = node.root
        self.events = node.events
        self.objects = live_objects(rec)
        self.store = object_store(self.objects)
        self.workloads = {o.key: Workload(o) for o in self.objects if o.kind in WORKLOADS}
        namespace = next((o for o in self.objects if o.kind == "Namespace"), None)
        self.namespace = namespace.name if namespace else "default"
        self.namespace_labels = dict((namespace.manifest["metadata"].get("labels") or {}) if namespace else {})
        self.services = Services([o.manifest for o in self.objects if o.kind == "Service"], self.net.index,
                                 self.backends, self.namespace)
        for w in self.workloads.values():
            if w.obj.kind != "Job":
                w.planned = self.plan(w)
        self.hosts: dict[str, list[str]] = {name: [ip] for name, ip in outside_hosts.items()}
        self.hosts.update(self.services.hosts(self._planned_ips))
        self.claims_root = self.root / "claims"
        self.stopping = threading.Event()

    # -- planning ---------------------------------------------------------------------

    def plan(self, w: Workload) -> list[Planned]:
        """Names and addresses of a workload's pods, known before they start."""
        names = ([f"{w.obj.name}-{i}" for i in range(w.replicas)] if w.obj.kind == "StatefulSet"
                 else [w.next_name() for _ in range(w.replicas)])
        return [Planned(name, *self.net.add_pod(name)) for name in names]

    def _planned_ips(self, selector: dict[str, str]) -> list[str]:
        return [p.ip for w in self.workloads.values() if w.obj.kind != "Job" and matches(selector, w.labels)
                for p in w.planned]

    def etc_files(self, pod: str, ip: str, spec: dict[str, Any]) -> dict[str, Path]:
        d = self.root / "pods" / pod / "etc"
        d.mkdir(parents=True, exist_ok=True)
        # The image's accounts only: a runtime adds none for runAsUser, so a uid the image lacks
        # has no entry (postgres's entrypoint must then fake one for initdb, as in a cluster).
        users = {"root": 0}
        for c in spec["containers"]:
            try:
                image = self.node.images.stand_in(c["image"], built=self.node.registry.is_built(c["image"]))
            except LookupError:
                continue  # it will not be pulled either
            users.update(dict(image.users))
        sc = spec.get("securityContext") or {}
        (d / "passwd").write_text("".join(f"{n}:x:{u}:{u}:{n}:/nonexistent:/sbin/nologin\n" for n, u in users.items()))
        groups = dict(users)
        if "fsGroup" in sc and int(sc["fsGroup"]) not in groups.values():
            groups[f"g{sc['fsGroup']}"] = int(sc["fsGroup"])
        (d / "group").write_text("".join(f"{n}:x:{g}:\n" for n, g in groups.items()))
        lines = ["127.0.0.1 localhost", "::1 localhost", f"{ip} {pod}"]
        lines += [f"{address} {name}" for name, addresses in sorted(self.hosts.items()) for address in addresses]
        (d / "hosts").write_text("\n".join(lines) + "\n")
        # Nothing answers DNS: names resolve from the hosts file, as Service names would.
        (d / "resolv.conf").write_text(f"nameserver {self.net.gateway}\noptions timeout:1 attempts:1\n")
        (d / "hostname").write_text(pod + "\n")
        return {name: d / name for name in ("passwd", "group", "hosts", "resolv.conf", "hostname")}

    def pull(self, ref: str, pull_secrets: list[dict[str, str]]) -> Image:
        """The kubelet's pull: the registry decides whether the image exists and may be pulled."""
        self.node.registry.pull(ref, pull_secrets)
        return self.node.images.stand_in(ref, built=self.node.registry.is_built(ref))

    def create_pod(self, w: Workload, planned: Planned, claims: Optional[dict[str, Path]] = None) -> Optional[Pod]:
        """Admission, then the pod started; None (and the workload failed) when refused."""
        spec = w.template["spec"]
        refused = admit(spec, self.namespace_labels)
        if refused:
            w.state, w.detail = "failed", (f"FailedCreate: pods \"{planned.name}\" is forbidden: violates PodSecurity "
                                           f"\"restricted:latest\": {'; '.join(refused)}")
            self.events.add("admission", w.detail)
            return None
        setup = PodSetup(self.store, self.pull, self.events, self.node.cgroup, self.node.meter, self.namespace)
        pod = Pod(planned.name, spec, w.labels, planned.ip, planned.netns, self.root / "pods" / planned.name, setup,
                  self.etc_files(planned.name, planned.ip, spec), claims=claims)
        for c in pod.containers:
            self.node.meter.track(f"{w.component}/{c.name}", c, job=w.obj.kind == "Job")
        w.pods.append(pod)
        pod.start()
        return pod

    def backends(self) -> list[Pod]:
        return [p for w in self.workloads.values() if w.obj.kind != "Job" for p in list(w.pods)]

    # -- applying ------------------------------------------------------------------------

    def dependencies(self, obj: LiveObject) -> list[LiveObject]:
        return [o for o in self.objects if o is not obj and self.rec.depends_on(obj.registered, o.registered)]

    def apply(self, timeout: float, only: Optional[set[str]] = None) -> dict[str, Workload]:
        """Create workloads as their dependencies complete (`tests.e2e.controllers.apply`)."""
        return controllers.apply(self, timeout, only)

    # -- queries -------------------------------------------------------------------------

    def why(self, p: Pod) -> str:
        """A pod that is not Ready, as `kubectl describe` would summarise it."""
        c = p.containers[0]
        if c.waiting:
            return c.waiting
        last = c.last_readiness.detail if c.last_readiness else "no readiness result"
        ended = f"; last exits {list(zip(c.exit_codes, c.reasons, strict=True))[-3:]}" if c.exit_codes else ""
        return f"not ready ({last}); restarts {c.restarts}{ended}; log: {c.log_tail(8)[-600:]}"

    def pods(self, component: str) -> list[Pod]:
        """The pods a Service would send to: not deleted, not finished (as `kubectl get` lists them)."""
        return [p for p in self.all_pods(component) if not p.deleted and p.phase in ("Pending", "Running")]

    def all_pods(self, component: str) -> list[Pod]:
        return [p for w in self.workloads.values() if w.component == component for p in w.pods]

    def workload(self, component: str, kind: Optional[str] = None) -> Workload:
        return next(w for w in self.workloads.values()
                    if w.component == component and (kind is None or w.obj.kind == kind))

    def config(self) -> dict[str, str]:
        """The bundler's settings ConfigMap."""
        name = next(o.name for o in self.objects if o.kind == "ConfigMap" and o.name.startswith("bundler-settings"))
        return self.store.config_maps[name]

    def stop(self) -> None:
        self.stopping.set()
        self.services.stop()
        for w in self.workloads.values():
            for p in w.pods:
                p.stop_all()

    def wait(self, condition: Callable[[], bool], timeout: float) -> Optional[float]:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if condition():
                return time.monotonic() - started
            time.sleep(0.1)
        return None
