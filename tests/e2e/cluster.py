"""The objects a stack's program registers, applied in the order Pulumi applies them.

`live_objects` turns what the program registered under the mock engine into manifests with
their real values (Secrets included: this never goes through `tools.render`, whose output is
redacted, and nothing here is written under build/render). `Cluster.apply` then walks the
program's own dependency graph: an object is created once everything it depends on is done,
where done means what the Kubernetes provider awaits (a StatefulSet's or Deployment's pods
Ready, a Job complete). A failed Job stops everything that waits for it, as a failed
`pulumi up` does.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.e2e.images import ImageSet
from tests.e2e.kubelet import Events, ObjectStore, Pod
from tests.e2e.network import StackNetwork
from tools.harness import Recording, Registered
from tools.render import normalise

WORKLOADS = ("StatefulSet", "Deployment", "Job")


@dataclass
class LiveObject:
    registered: Registered
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def live_objects(rec: Recording) -> list[LiveObject]:
    """Every Kubernetes object the program registered, with real (unredacted) values."""
    objects = []
    for r in rec.resources:
        if not (r.custom and r.type.startswith("kubernetes:")):
            continue
        body = normalise(r.inputs)
        body.setdefault("metadata", {})["name"] = rec.k8s_name(r)
        objects.append(LiveObject(r, body))
    return objects


def object_store(objects: list[LiveObject]) -> ObjectStore:
    store = ObjectStore()
    for o in objects:
        if o.kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (o.manifest.get("data") or {}).items()}
            data.update(o.manifest.get("stringData") or {})
            store.secrets[o.name] = data
        elif o.kind == "ConfigMap":
            store.config_maps[o.name] = dict(o.manifest.get("data") or {})
    return store


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Workload:
    """A StatefulSet, Deployment or Job and the pods it has made."""

    obj: LiveObject
    pods: list[Pod] = field(default_factory=list)
    planned: list[tuple[str, str, str]] = field(default_factory=list)  # (pod name, netns, ip)
    state: str = "pending"  # pending, running, done, failed, blocked
    detail: str = ""

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.obj.manifest["spec"]["template"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.template.get("metadata", {}).get("labels") or {})

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")


class Cluster:
    def __init__(self, stack: str, rec: Recording, images: ImageSet, net: StackNetwork, root: Path,
                 outside_hosts: dict[str, str], events: Optional[Events] = None) -> None:
        self.stack = stack
        self.rec = rec
        self.images = images
        self.net = net
        self.root = root
        self.events = events or Events()
        self.objects = live_objects(rec)
        self.store = object_store(self.objects)
        self.workloads = {o.key: Workload(o) for o in self.objects if o.kind in WORKLOADS}
        self.namespace = next((o.name for o in self.objects if o.kind == "Namespace"), "default")
        self._plan()
        self.hosts = self._hosts(outside_hosts)
        self.claims_root = root / "claims"

    # -- planning ---------------------------------------------------------------------

    def _plan(self) -> None:
        """Names and addresses of the long-running pods, known before anything starts, so the
        hosts file can map every Service name to the pods behind it."""
        for w in self.workloads.values():
            if w.obj.kind == "Job":
                continue  # Job pods come and go; nothing resolves to them
            for i in range(int(w.obj.manifest["spec"].get("replicas", 1))):
                name = f"{w.obj.name}-{i}"
                ns, ip = self.net.add_pod(name)
                w.planned.append((name, ns, ip))

    def _hosts(self, outside_hosts: dict[str, str]) -> dict[str, list[str]]:
        hosts: dict[str, list[str]] = {name: [ip] for name, ip in outside_hosts.items()}
        for o in self.objects:
            if o.kind != "Service":
                continue
            selector = o.manifest["spec"].get("selector") or {}
            ips = [ip for w in self.workloads.values() if w.obj.kind != "Job" and matches(selector, w.labels)
                   for _, _, ip in w.planned]
            self._check_ports(o, selector)
            ns = o.manifest["metadata"].get("namespace", self.namespace)
            for name in (o.name, f"{o.name}.{ns}", f"{o.name}.{ns}.svc", f"{o.name}.{ns}.svc.cluster.local"):
                hosts[name] = ips
        return hosts

    def _check_ports(self, service: LiveObject, selector: dict[str, str]) -> None:
        """Names resolve to pod IPs here (no kube-proxy), so a Service must not remap ports."""
        for port in service.manifest["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            for w in self.workloads.values():
                if w.obj.kind == "Job" or not matches(selector, w.labels):
                    continue
                container_ports = {p.get("name"): int(p["containerPort"])
                                   for c in w.template["spec"]["containers"] for p in c.get("ports") or []}
                resolved = int(target) if str(target).isdigit() else container_ports.get(str(target))
                if resolved != int(port["port"]):
                    raise ValueError(f"Service {service.name} maps port {port['port']} to {target}: "
                                     "the runner resolves names to pod IPs and cannot remap ports")

    def _etc_files(self, pod: str, ip: str, spec: dict[str, Any]) -> dict[str, Path]:
        d = self.root / "pods" / pod / "etc"
        d.mkdir(parents=True, exist_ok=True)
        # The image's accounts only: a runtime adds none for runAsUser, so a uid the image lacks
        # has no entry (postgres's entrypoint must then fake one for initdb, as in a cluster).
        users = {"root": 0}
        for c in spec["containers"]:
            users.update(dict(self.images(c["image"]).users))
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

    def _pod(self, name: str, ns: str, ip: str, spec: dict[str, Any], claims: Optional[dict[str, Path]] = None) -> Pod:
        return Pod(name, spec, ip, ns, self.root / "pods" / name, self.store, self.images,
                   self._etc_files(name, ip, spec), self.events, claims=claims, namespace=self.namespace)

    # -- applying ------------------------------------------------------------------------

    def dependencies(self, obj: LiveObject) -> list[LiveObject]:
        return [o for o in self.objects if o is not obj and self.rec.depends_on(obj.registered, o.registered)]

    def apply(self, timeout: float, only: Optional[set[str]] = None) -> dict[str, Workload]:
        """Create workloads as their dependencies complete; return the workloads' final states.
        With `only`, the other workloads are taken as they stand (a second `up` of some objects)."""
        deadline = time.monotonic() + timeout
        started: set[str] = set() if only is None else {k for k in self.workloads if k not in only}
        while time.monotonic() < deadline:
            progressed = False
            for w in self.workloads.values():
                if w.obj.key in started:
                    continue
                deps = [d for d in self.dependencies(w.obj) if d.key in self.workloads]
                states = [self.workloads[d.key].state for d in deps]
                if any(s in ("failed", "blocked") for s in states):
                    w.state, w.detail = "blocked", "waits for " + ", ".join(
                        d.key for d in deps if self.workloads[d.key].state in ("failed", "blocked"))
                    started.add(w.obj.key)
                    progressed = True
                elif all(s == "done" for s in states):
                    started.add(w.obj.key)
                    self.events.add("apply", f"create {w.obj.key}")
                    threading.Thread(target=self._run_workload, args=(w, deadline), daemon=True).start()
                    progressed = True
            if all(w.state in ("done", "failed", "blocked") for w in self.workloads.values()):
                break
            if not progressed:
                time.sleep(0.2)
        for w in self.workloads.values():
            if w.state in ("pending", "running"):
                w.state, w.detail = "failed", w.detail or f"not done within {timeout:.0f} s"
        return self.workloads

    def _run_workload(self, w: Workload, deadline: float) -> None:
        w.state = "running"
        try:
            if w.obj.kind == "Job":
                self._run_job(w, deadline)
            else:
                self._run_replicas(w, deadline)
        except Exception as error:  # reported as the workload's failure
            w.state, w.detail = "failed", f"{type(error).__name__}: {error}"

    def _run_replicas(self, w: Workload, deadline: float) -> None:
        spec = w.template["spec"]
        claims = [t["metadata"]["name"] for t in w.obj.manifest["spec"].get("volumeClaimTemplates") or []]
        for name, ns, ip in w.planned:
            pod_claims = {c: self.claims_root / name / c for c in claims}
            pod = self._pod(name, ns, ip, spec, pod_claims)
            w.pods.append(pod)
            pod.start()
        while time.monotonic() < deadline:
            if all(p.ready for p in w.pods):
                w.state = "done"
                self.events.add("apply", f"{w.obj.key} ready")
                return
            time.sleep(0.2)
        w.state, w.detail = "failed", "pods not ready: " + "; ".join(
            f"{p.name}: "
            f"{p.containers[0].last_readiness.detail if p.containers[0].last_readiness else 'no probe result'}"
            for p in w.pods if not p.ready)

    def _run_job(self, w: Workload, deadline: float) -> None:
        spec = w.obj.manifest["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        active_deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds", 1e9))
        failures, delay = 0, 10.0
        while True:
            name = f"{w.obj.name}-{failures}"
            ns, ip = self.net.add_pod(name)
            pod = self._pod(name, ns, ip, w.template["spec"])
            w.pods.append(pod)
            pod.start()
            while pod.phase == "Running" and time.monotonic() < min(deadline, active_deadline):
                time.sleep(0.2)
            if pod.phase == "Running":
                pod.delete()
                w.state, w.detail = "failed", "DeadlineExceeded"
                return
            if pod.phase == "Succeeded":
                w.state = "done"
                self.events.add("apply", f"{w.obj.key} complete")
                return
            failures += 1
            if failures > backoff_limit:
                w.state, w.detail = "failed", f"BackoffLimitExceeded after {failures} failed pod(s)"
                return
            time.sleep(delay)
            delay *= 2

    # -- queries -------------------------------------------------------------------------

    def pods(self, component: str) -> list[Pod]:
        return [p for w in self.workloads.values() if w.component == component for p in w.pods]

    def workload(self, component: str, kind: Optional[str] = None) -> Workload:
        return next(w for w in self.workloads.values()
                    if w.component == component and (kind is None or w.obj.kind == kind))

    def config(self) -> dict[str, str]:
        """The bundler's settings ConfigMap."""
        name = next(o.name for o in self.objects if o.kind == "ConfigMap" and o.name.startswith("bundler-settings"))
        return self.store.config_maps[name]

    def stop(self) -> None:
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
