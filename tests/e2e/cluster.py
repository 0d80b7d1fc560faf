"""The objects a stack's program registers, applied in the order Pulumi applies them.

`live_objects` turns what the program registered under the mock engine into manifests with
their real values (Secrets included: this never goes through `tools.render`, whose output is
redacted, and nothing here is written under build/render). `Cluster.apply` then walks the
program's own dependency graph: an object is created once everything it depends on is done,
where done means what the Kubernetes provider awaits (a StatefulSet's or Deployment's pods
Ready, a Job complete). A failed Job stops everything that waits for it, as a failed
`pulumi up` does.

Controllers, as far as the scenarios need them: each pod is admitted against the namespace's
Pod Security level first (refused: `FailedCreate`); a Deployment's or StatefulSet's pod that is
deleted or evicted is replaced (a Deployment's under a new name and address, a StatefulSet's
under its own name with its claims); a Job makes a new pod per failure up to `backoffLimit`,
with the Job controller's backoff, within `activeDeadlineSeconds`. A pod that cannot start
(refused, image not pulled, configuration refused) fails its workload at once: nothing in a
run can change that, where a cluster would keep retrying until Pulumi's timeout.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.e2e.admission import admit
from tests.e2e.images import Image, ImageSet
from tests.e2e.kubelet import Events, Pod, PodSetup
from tests.e2e.limits import Cgroup
from tests.e2e.network import StackNetwork
from tests.e2e.registry import Registry
from tests.e2e.services import Services
from tests.e2e.usage import Meter
from tests.e2e.volumes import ObjectStore
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


@dataclass(frozen=True)
class Planned:
    name: str
    netns: str
    ip: str


@dataclass
class Workload:
    """A StatefulSet, Deployment or Job and the pods it has made."""

    obj: LiveObject
    pods: list[Pod] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    state: str = "pending"  # pending, running, done, failed, blocked
    detail: str = ""
    made: int = 0
    """Pods named so far: each new pod of a Deployment or Job takes the next number."""

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.obj.manifest["spec"]["template"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.template.get("metadata", {}).get("labels") or {})

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    @property
    def replicas(self) -> int:
        return int(self.obj.manifest["spec"].get("replicas", 1))

    def next_name(self) -> str:
        self.made += 1
        return f"{self.obj.name}-{self.made - 1}"


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
        self._stopping = threading.Event()

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
        setup = PodSetup(self.store, self.pull, self.events, self.node.cgroup, self.namespace, self.node.meter)
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
        """Create workloads as their dependencies complete; return the workloads' final states.
        With `only`, the other workloads are taken as they stand (a second `up` of some objects:
        each of those gets a new set of planned pods, created only if its dependencies complete)."""
        deadline = time.monotonic() + timeout
        started: set[str] = set() if only is None else {k for k in self.workloads if k not in only}
        for key in only or ():
            w = self.workloads[key]
            w.state, w.detail = "pending", ""
            if w.obj.kind != "Job":
                w.planned = self.plan(w)
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

    def _claims(self, w: Workload, pod: str) -> dict[str, Path]:
        templates = w.obj.manifest["spec"].get("volumeClaimTemplates") or []
        return {t["metadata"]["name"]: self.claims_root / pod / t["metadata"]["name"] for t in templates}

    def _run_replicas(self, w: Workload, deadline: float) -> None:
        mine = []
        for planned in w.planned:
            pod = self.create_pod(w, planned, self._claims(w, planned.name))
            if pod is None:
                return
            mine.append(pod)
        while time.monotonic() < deadline and w.state == "running":
            if all(p.ready for p in mine):
                w.state = "done"
                self.events.add("apply", f"{w.obj.key} ready")
                break
            stuck = [f"{p.name}: {c.waiting}" for p in mine for c in p.containers if p.blocked and c.waiting]
            if stuck:
                w.state, w.detail = "failed", "; ".join(stuck)
                return
            time.sleep(0.2)
        else:
            if w.state == "running":
                w.state, w.detail = "failed", "pods not ready: " + "; ".join(
                    f"{p.name}: {self.why(p)}" for p in mine if not p.ready)
            return
        self._replace_lost(w)

    def _replace_lost(self, w: Workload) -> None:
        """The ReplicaSet's (or StatefulSet's) part: a pod deleted or evicted gets a successor."""
        replaced: set[int] = set()
        while not self._stopping.wait(0.5):
            for pod in list(w.pods):
                if pod.deleted and id(pod) not in replaced:
                    replaced.add(id(pod))
                    name = pod.name if w.obj.kind == "StatefulSet" else w.next_name()
                    self.events.add("controller", f"{w.obj.key}: {pod.name} gone, creating {name}")
                    self.create_pod(w, Planned(name, *self.net.add_pod(name)), self._claims(w, name))

    def _run_job(self, w: Workload, deadline: float) -> None:
        spec = w.obj.manifest["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        active_deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds", 1e9))
        failures, delay = 0, 10.0
        while True:
            name = w.next_name()
            pod = self.create_pod(w, Planned(name, *self.net.add_pod(name)))
            if pod is None:
                return
            if pod.blocked:
                w.state, w.detail = "failed", "; ".join(f"{name}: {c.waiting}" for c in pod.containers if c.waiting)
                return
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
                reasons = [r for c in pod.containers for r in c.reasons[-1:]]
                w.state, w.detail = "failed", (f"BackoffLimitExceeded after {failures} failed pod(s), "
                                               f"the last {', '.join(reasons) or 'without a reason'}")
                return
            time.sleep(delay)
            delay *= 2

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
        self._stopping.set()
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
