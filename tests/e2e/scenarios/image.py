"""The image (seed risk 5): the traced /app, which every scenario runs on, holds every file the
processes load, and each process comes up within what its startup probe allows.

The load line reads what tests/e2e/loads.js recorded in every process of the bundler image over
the whole run (tests/e2e/loads.py says what it checks); the time-to-Ready line reads the
kubelet's events of the stack's first `up`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from components.names import ADMIN, API, MIGRATION, WORKERS
from tests.e2e.images import YARN_DIR
from tests.e2e.loads import Records, judge, read
from tests.e2e.plan import scenario
from tests.e2e.upstream.tracer import traced_files

if TYPE_CHECKING:
    from tests.e2e.stack import StackTest

LOADS = "every file the bundler's processes loaded is in the image's traced /app; none they looked for was left out"
READY = "each process Ready within its startup probe's budget"
NEVER_LOADED_SHOWN = 8
BUNDLER = (API, WORKERS, ADMIN, MIGRATION)


def startup_budget(container: dict[str, Any]) -> float:
    """Seconds the kubelet allows before it restarts a container that never passed its startup
    probe, plus one readiness period to turn Ready after it."""
    startup = container.get("startupProbe") or {}
    readiness = container.get("readinessProbe") or {}
    return (float(startup.get("initialDelaySeconds", 0))
            + float(startup.get("failureThreshold", 3)) * float(startup.get("periodSeconds", 10))
            + float(readiness.get("periodSeconds", 10)))


def listening_after(records: Records, pod: str, container: dict[str, Any]) -> Optional[float]:
    """Seconds from its process's start until the container's first declared port listened."""
    ports = {int(p["containerPort"]) for p in container.get("ports") or []}
    found = [s for port, s in records.listens.get(f"{pod}.{container['name']}", []) if port in ports]
    return min(found) if found else None


@scenario(READY)
def time_to_ready(t: StackTest) -> None:
    """From the first container start of each workload's first pod to its first Ready (the
    migration Job: to its exit 0); and, finer than the probes' period, when its port listened."""
    lines = t.events.lines
    records = read(t.recorder.out)
    figures, late = [], []
    for w in t.cluster.workloads.values():
        if w.component not in BUNDLER or not w.pods:
            continue
        pod = w.pods[0]
        container = w.template["spec"]["containers"][0]
        name = container["name"]
        started = next((ts for ts, who, what in lines if who == pod.name and what.startswith(f"{name} started")), None)
        job = w.obj.kind == "Job"
        done = next((ts for ts, who, what in lines if who == pod.name and started is not None and ts >= started
                     and (what.endswith("exit 0, reason Completed") if job else what == f"{name} ready")), None)
        seconds = None if started is None or done is None else done - started
        budget = startup_budget(container)
        listened = listening_after(records, pod.name, container)
        figures.append(f"{w.component} {'never' if seconds is None else f'{seconds:.1f} s'} (budget {budget:.0f} s"
                       f"{'' if listened is None else f', listening after {listened:.2f} s'})")
        if seconds is None or seconds > budget:
            late.append(w.component)
    t.ok(READY, bool(figures) and not late,
         f"{'; '.join(figures)} on the tree {t.app.spec} laid out; late or never: {late or 'none'}")


def _outside_allowed(t: StackTest) -> tuple[str, ...]:
    """Where a bundler process may load from besides /app: the program's ConfigMap-mounted scripts,
    and the base image's yarn (`yarn db:migrate`)."""
    allowed = {f"{YARN_DIR}/"}
    for w in t.cluster.workloads.values():
        spec = w.template["spec"]
        config_maps = {v["name"] for v in spec.get("volumes") or [] if "configMap" in v}
        for container in spec["containers"]:
            allowed |= {f"{m['mountPath'].rstrip('/')}/" for m in container.get("volumeMounts") or []
                        if m["name"] in config_maps}
    return tuple(sorted(allowed))


@scenario(LOADS)
def loads_in_traced_set(t: StackTest) -> None:
    """Everything every bundler process loaded during the run, against the image's traced set."""
    # A tree no step traced (imageDockerfile=upstream) holds everything: then the question is
    # whether what the tracer would keep of it covers what the processes loaded.
    traced = set(t.app.trace["files"]) if t.app.trace else traced_files(t.app.app_dir)
    verdict = judge(read(t.recorder.out), traced, t.app.full_app, t.app.app_dir, _outside_allowed(t))
    never = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in verdict.never_loaded[:NEVER_LOADED_SHOWN])
    t.ok(LOADS, verdict.ok, f"{verdict.detail}; traced but never loaded in this run: {len(verdict.never_loaded)} "
         f"packages, largest {never or 'none'}")
