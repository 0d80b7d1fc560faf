"""The controllers the scenarios need: `pulumi up`'s order, ReplicaSets and StatefulSets, Jobs.

`apply` walks the program's own dependency graph: a workload is created once everything it
depends on is done, where done means what the Kubernetes provider awaits (a StatefulSet's or
Deployment's pods Ready, a Job complete); a failed Job blocks everything that waits for it, as
a failed `pulumi up` does. A Deployment's or StatefulSet's pod that is deleted or evicted is
replaced (a Deployment's under a new name and address, a StatefulSet's under its own name with
its claims); a Job makes a new pod per failure up to `backoffLimit`, with the Job controller's
backoff, within `activeDeadlineSeconds`. A pod that cannot start (refused by admission, image
not pulled, configuration refused) fails its workload at once: nothing in a run can change
that, where a cluster would keep retrying until Pulumi's timeout.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tests.e2e.objects import Planned, Workload

if TYPE_CHECKING:
    from tests.e2e.cluster import Cluster


def apply(cluster: Cluster, timeout: float, only: Optional[set[str]] = None) -> dict[str, Workload]:
    """Create workloads as their dependencies complete; return the workloads' final states.
    With `only`, the other workloads are taken as they stand (a second `up` of some objects:
    each of those gets a new set of planned pods, created only if its dependencies complete)."""
    deadline = time.monotonic() + timeout
    started: set[str] = set() if only is None else {k for k in cluster.workloads if k not in only}
    for key in only or ():
        w = cluster.workloads[key]
        w.state, w.detail = "pending", ""
        if w.obj.kind != "Job":
            w.planned = cluster.plan(w)
    # The graph does not change during an apply: walk it once, not on every pass of the loop.
    waits_for = {key: [d for d in cluster.dependencies(w.obj) if d.key in cluster.workloads]
                 for key, w in cluster.workloads.items() if key not in started}
    while time.monotonic() < deadline:
        progressed = False
        for w in cluster.workloads.values():
            if w.obj.key in started:
                continue
            deps = waits_for[w.obj.key]
            states = [cluster.workloads[d.key].state for d in deps]
            if any(s in ("failed", "blocked") for s in states):
                w.state, w.detail = "blocked", "waits for " + ", ".join(
                    d.key for d in deps if cluster.workloads[d.key].state in ("failed", "blocked"))
                started.add(w.obj.key)
                progressed = True
            elif all(s == "done" for s in states):
                started.add(w.obj.key)
                cluster.events.add("apply", f"create {w.obj.key}")
                threading.Thread(target=_run_workload, args=(cluster, w, deadline), daemon=True).start()
                progressed = True
        if all(w.state in ("done", "failed", "blocked") for w in cluster.workloads.values()):
            break
        if not progressed:
            time.sleep(0.2)
    for w in cluster.workloads.values():
        if w.state in ("pending", "running"):
            w.state, w.detail = "failed", w.detail or f"not done within {timeout:.0f} s"
    return cluster.workloads


def _run_workload(cluster: Cluster, w: Workload, deadline: float) -> None:
    w.state = "running"
    try:
        if w.obj.kind == "Job":
            _run_job(cluster, w, deadline)
        else:
            _run_replicas(cluster, w, deadline)
    except Exception as error:  # reported as the workload's failure
        w.state, w.detail = "failed", f"{type(error).__name__}: {error}"


def claims(cluster: Cluster, w: Workload, pod: str) -> dict[str, Path]:
    templates = w.obj.manifest["spec"].get("volumeClaimTemplates") or []
    return {t["metadata"]["name"]: cluster.claims_root / pod / t["metadata"]["name"] for t in templates}


def _run_replicas(cluster: Cluster, w: Workload, deadline: float) -> None:
    mine = []
    for planned in w.planned:
        pod = cluster.create_pod(w, planned, claims(cluster, w, planned.name))
        if pod is None:
            return
        mine.append(pod)
    while time.monotonic() < deadline and w.state == "running":
        if all(p.ready for p in mine):
            w.state = "done"
            cluster.events.add("apply", f"{w.obj.key} ready")
            break
        stuck = [f"{p.name}: {c.waiting}" for p in mine for c in p.containers if p.blocked and c.waiting]
        if stuck:
            w.state, w.detail = "failed", "; ".join(stuck)
            return
        time.sleep(0.2)
    else:
        if w.state == "running":
            w.state, w.detail = "failed", "pods not ready: " + "; ".join(
                f"{p.name}: {cluster.why(p)}" for p in mine if not p.ready)
        return
    _replace_lost(cluster, w)


def _replace_lost(cluster: Cluster, w: Workload) -> None:
    """The ReplicaSet's (or StatefulSet's) part: a pod deleted or evicted gets a successor."""
    replaced: set[int] = set()
    while not cluster.stopping.wait(0.5):
        for pod in list(w.pods):
            if pod.deleted and id(pod) not in replaced:
                replaced.add(id(pod))
                name = pod.name if w.obj.kind == "StatefulSet" else w.next_name()
                cluster.events.add("controller", f"{w.obj.key}: {pod.name} gone, creating {name}")
                cluster.create_pod(w, Planned(name, *cluster.net.add_pod(name)), claims(cluster, w, name))


def _run_job(cluster: Cluster, w: Workload, deadline: float) -> None:
    spec = w.obj.manifest["spec"]
    backoff_limit = int(spec.get("backoffLimit", 6))
    active_deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds", 1e9))
    failures, delay = 0, 10.0
    while True:
        name = w.next_name()
        pod = cluster.create_pod(w, Planned(name, *cluster.net.add_pod(name)))
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
            cluster.events.add("apply", f"{w.obj.key} complete")
            return
        failures += 1
        if failures > backoff_limit:
            reasons = [r for c in pod.containers for r in c.reasons[-1:]]
            w.state, w.detail = "failed", (f"BackoffLimitExceeded after {failures} failed pod(s), "
                                           f"the last {', '.join(reasons) or 'without a reason'}")
            return
        time.sleep(delay)
        delay *= 2
