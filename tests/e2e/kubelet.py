"""A kubelet for one machine without Kubernetes: runs an admitted pod as its spec says.

A pod has its network namespace and address, its volumes (`tests.e2e.volumes`), a cgroup
limited to the sum of its containers' limits (`tests.e2e.limits`), and its containers
(`tests.e2e.container`), started once their images are pulled from the runner's registry
(`tests.e2e.registry`; a failed pull leaves the pod Pending in `ErrImagePull`, then
`ImagePullBackOff`, retried with the kubelet's backoff). Probes (exec, httpGet, tcpSocket) run
on their periods with their timeouts and thresholds; a failed liveness probe restarts the
container; an exited container is restarted per `restartPolicy` with the kubelet's backoff; an
emptyDir over its `sizeLimit` gets the pod evicted. Deleting a pod takes it out of its
Services' endpoints (after `ENDPOINT_REMOVAL_DELAY`), then runs each container's preStop and
stop signal within the grace period.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from tests.e2e import timeouts
from tests.e2e.admission import CreateContainerConfigError, Launch, launch
from tests.e2e.container import Container
from tests.e2e.images import Image
from tests.e2e.limits import Cgroup, Limits
from tests.e2e.probing import BACKOFF_START, probe_loop, supervise
from tests.e2e.registry import PullError
from tests.e2e.volumes import ObjectStore, PodVolumes

# The credentials of a container the kubelet refuses to start: never used to run anything.
NEVER_STARTED = Launch(65534, 65534, (65534,), (), True, True)


@dataclass
class Events:
    """What happened, with timestamps, for the scenarios to assert on."""

    lines: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, who: str, what: str) -> None:
        with self.lock:
            self.lines.append((time.monotonic(), who, what))

    def since(self, t: float, who: Optional[str] = None) -> list[str]:
        with self.lock:
            return [w for ts, o, w in self.lines if ts >= t and (who is None or o == who)]


class Meter(Protocol):
    def final(self, container: Container) -> None: ...


@dataclass
class PodSetup:
    """What a pod needs from its node: where it lives and what it may reach."""

    store: ObjectStore
    images: Callable[[str, list[dict[str, str]]], Image]
    """Pull: reference and the pod's pull Secrets' data -> image, or PullError."""
    events: Events
    cgroup: Cgroup
    meter: Meter
    namespace: str = "default"


class Pod:
    def __init__(self, name: str, spec: dict[str, Any], labels: dict[str, str], ip: str, netns: str, root: Path,
                 setup: PodSetup, etc_files: dict[str, Path], claims: Optional[dict[str, Path]] = None) -> None:
        self.name = name
        self.spec = spec
        self.labels = labels
        self.ip = ip
        self.netns = netns
        self.root = root
        self.setup = setup
        self.store = setup.store
        self.events = setup.events
        self.etc_files = etc_files
        self.namespace = setup.namespace
        self.deleted = False
        self.deleted_at: Optional[float] = None
        self.ready_when_deleted = False
        self.phase = "Pending"
        self.reason = ""
        self.stopped = threading.Event()
        self.volumes = PodVolumes(root, spec, setup.store, claims or {})
        self.cgroup = setup.cgroup.child(name)
        pull_secrets = [setup.store.secrets.get(s["name"], {}) for s in spec.get("imagePullSecrets") or []]
        self.blocked: dict[str, str] = {}
        """Container -> why the kubelet cannot start it (a failed pull, a refused configuration)."""
        self.containers: list[Container] = []
        for c in spec["containers"]:
            try:
                image = setup.images(c["image"], pull_secrets)
            except PullError as error:
                self.blocked[c["name"]] = str(error)
                image = Image("unpulled", (), ())
            try:
                creds = launch(spec, c, image.uid, image.gid)
            except CreateContainerConfigError as error:
                self.blocked.setdefault(c["name"], f"CreateContainerConfigError: {error}")
                creds = NEVER_STARTED
            self.containers.append(Container(self, c, image, creds))
        self.cgroup.set_limits(Limits.pod([c.limits for c in self.containers]))

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy", "Always"))

    @property
    def grace(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    def field(self, path: str) -> str:
        values = {"status.podIP": self.ip, "metadata.name": self.name, "metadata.namespace": self.namespace,
                  "spec.nodeName": "e2e-node", "status.hostIP": self.ip}
        return values[path]

    def volume_path(self, name: str) -> Path:
        return self.volumes[name].path

    def meter_final(self, c: Container) -> None:
        self.setup.meter.final(c)

    # -- what Services read ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.deleted and all(c.ready for c in self.containers)

    def serving(self, now: float, removal_delay: float) -> bool:
        """In its Services' endpoints: Ready, or deleted while Ready less than the delay ago."""
        if self.deleted_at is not None:
            return self.ready_when_deleted and now - self.deleted_at < removal_delay
        return self.ready

    def container_port(self, name: str) -> Optional[int]:
        for c in self.containers:
            for p in c.spec.get("ports") or []:
                if p.get("name") == name:
                    return int(p["containerPort"])
        return None

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        if self.blocked:
            self._waiting()
            return
        self.phase = "Running"
        for container in self.containers:
            container.start()
            for kind in ("startup", "readiness", "liveness"):
                threading.Thread(target=probe_loop, args=(self, container, kind), daemon=True,
                                 name=f"{self.name}/{container.name}/{kind}").start()
            threading.Thread(target=supervise, args=(self, container), daemon=True,
                             name=f"{self.name}/{container.name}/supervise").start()
        threading.Thread(target=self._evictions, daemon=True, name=f"{self.name}/eviction").start()

    def _waiting(self) -> None:
        """The pod stays Pending. A failed pull is retried with the kubelet's backoff
        (ErrImagePull, then ImagePullBackOff); the runner's registry does not change within a
        run, so each retry fails as the first pull did."""
        for c in self.containers:
            c.waiting = self.blocked.get(c.name, "PodInitializing")
        self.events.add(self.name, f"cannot start: {'; '.join(self.blocked.values())}")

        def back_off() -> None:
            self.stopped.wait(BACKOFF_START)
            for c in self.containers:
                if self.blocked.get(c.name, "").startswith("ErrImagePull"):
                    c.waiting = "ImagePullBackOff: " + self.blocked[c.name].partition(": ")[2]
        threading.Thread(target=back_off, daemon=True).start()

    def _evictions(self) -> None:
        """The eviction manager's check of emptyDir sizeLimits: over it, the pod is evicted."""
        while not self.stopped.wait(timeouts.EVICTION_PERIOD):
            over = self.volumes.over_limit()
            if over and not self.deleted:
                self.reason = "Evicted: " + "; ".join(over)
                self.events.add(self.name, self.reason)
                # Local-storage evictions give no grace period.
                self.delete(grace=0.0)
                self.phase = "Failed"
                return

    def hold(self, container: Optional[str] = None) -> None:
        """Stop a container and keep it stopped (a service taken down on purpose)."""
        c = self.container(container)
        c.held = True
        with c.lock:
            if c.running():
                c.kill(self.grace, "held down", run_pre_stop=False)

    def resume(self, container: Optional[str] = None) -> None:
        c = self.container(container)
        with c.lock:
            c.held = False
            c.restarts += 1
            c.start()

    def container(self, name: Optional[str] = None) -> Container:
        return self.containers[0] if name is None else next(c for c in self.containers if c.name == name)

    def delete(self, grace: Optional[float] = None) -> float:
        """As `kubectl delete pod`: leaves its endpoints after the removal delay (in
        `serving`), while each container runs its preStop and stops within the grace period."""
        self.ready_when_deleted = self.ready
        self.deleted_at = time.monotonic()
        self.deleted = True  # never restarted from here on
        grace = self.grace if grace is None else grace
        workers = []
        for c in self.containers:
            def stop(c: Container = c) -> None:
                with c.lock:
                    if c.running():
                        c.kill(grace, "pod deleted", run_pre_stop=grace > 0)
            thread = threading.Thread(target=stop, daemon=True)
            thread.start()
            workers.append(thread)
        for thread in workers:
            thread.join()
        self.stopped.set()
        self.phase = "Deleted"
        return time.monotonic() - self.deleted_at

    def stop_all(self) -> None:
        """Tear-down at the end of a run: no grace, everything it started gone, secrets off disk."""
        self.stopped.set()
        for c in self.containers:
            if c.running():
                c.signal_pid1(signal.SIGKILL)
                assert c.proc is not None
                c.proc.wait(timeouts.REAP)
            c.note_exit("killed at tear-down")
        self.cgroup.remove()
        self.volumes.scrub()
