"""Capacity: a burst of uploads against the database's real connection limit, what each container
uses (from its cgroup), and the limits the kernel enforces matching what the program declares."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from components.settings.budget import connection_peak
from tests.e2e.context import Context
from tests.e2e.limits import Limits
from tests.e2e.plan import scenario
from tests.e2e.sandbox import process_tree
from tests.e2e.scenarios.data_path import in_database
from tests.e2e.usage import MEMORY_MARGIN

if TYPE_CHECKING:
    from tests.e2e.stack import StackTest

BURST = 12
# How long the pods are left alone, Ready, to measure their idle use (probes included).
IDLE_SECONDS = 20


@scenario()
def idle(t: StackTest) -> None:
    """The idle window of the usage table: the stack Ready and left alone."""
    with t.meter.window("idle"):
        time.sleep(IDLE_SECONDS)


def _burst(t: Context) -> tuple[list[dict[str, Any]], list[str], int, dict[str, int]]:
    """BURST concurrent uploads through the API Service; PostgreSQL's own count of connections
    sampled meanwhile, and every upload's result kept."""
    peak, by_client = 0, {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, by_client
        while not stop.is_set():
            try:
                rows = t.clients.sql(
                    "SELECT coalesce(host(client_addr), 'local'), count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND datname = current_database() GROUP BY 1")
            except RuntimeError:
                rows = ""
            counts = {r.split("|")[0]: int(r.split("|")[1]) for r in rows.splitlines() if "|" in r}
            total = sum(counts.values()) - 1  # this query's own connection
            if total > peak:
                peak, by_client = total, counts
            stop.wait(0.2)

    results: list[dict[str, Any]] = [{} for _ in range(BURST)]
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            results[i] = t.clients.upload(t.api_url())
        except Exception as error:  # kept, and reported in the line
            errors.append(f"upload {i}: {type(error).__name__}: {error}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    uploads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    for u in uploads:
        u.start()
    for u in uploads:
        u.join()
    time.sleep(2)
    stop.set()
    sampler.join()
    return results, errors, peak, by_client


@scenario(f"burst of {BURST} concurrent uploads: each accepted, receipted and stored",
          "database connections within the budget and the server's max_connections", remote=True)
def burst(t: Context) -> None:
    # The emulated run measures the burst as a window of its usage table; kubectl's has no meter.
    meter = getattr(t, "meter", None)
    with meter.window("burst") if meter is not None else contextlib.nullcontext():
        results, errors, peak, by_client = _burst(t)
    accepted = [r for r in results if r.get("status") == 200]
    t.state.accepted_uploads += len(accepted)
    receipted = [r for r in accepted if r.get("receipt_valid") is True]
    stored = [r for r in receipted if t.cluster.wait(lambda r=r: in_database(t, str(r["id"])), 60) is not None
              and t.clients.s3_keys(f"raw-data-item/{r['id']}")]
    statuses = sorted({str(r.get("status")) for r in results})
    t.ok(f"burst of {BURST} concurrent uploads: each accepted, receipted and stored",
         len(stored) == BURST and not errors,
         f"HTTP {'/'.join(statuses)}; accepted {len(accepted)}, receipt verified {len(receipted)}, in PostgreSQL and "
         f"the bucket {len(stored)} of {BURST}; slowest {max((r.get('elapsed_ms') or 0) for r in results)} ms"
         + (f"; {errors[:2]}" if errors else ""))

    c = t.cluster.config()
    replicas = {w.component: int(w.obj.manifest["spec"].get("replicas", 1))
                for w in t.cluster.workloads.values() if w.obj.kind == "Deployment"}
    budget = connection_peak(replicas, int(c["DB_POOL_MAX"]))
    total = sum(v["total"] for v in budget.values())
    server = t.clients.sql("SELECT current_setting('max_connections')::int - "
                           "current_setting('superuser_reserved_connections')::int").strip()
    usable = int(server) if server.isdigit() else 0
    pods = {p.ip: p.name for w in t.cluster.workloads.values() for p in w.pods}
    named = ", ".join(f"{pods.get(ip, ip)} {n}" for ip, n in sorted(by_client.items()))
    t.ok("database connections within the budget and the server's max_connections", 0 < peak <= total <= usable,
         f"observed peak {peak} in pg_stat_activity under {BURST} concurrent uploads ({named}) <= counted peak "
         f"{total} = " + " + ".join(f"{k} {v['pods']} x {v['per_process']}" for k, v in budget.items())
         + f" <= {usable} usable (the server's max_connections less its superuser-reserved ones)")


@scenario(f"memory limits cover the measured peak + {MEMORY_MARGIN:.0%}")
def resources(t: StackTest) -> None:
    """Each container's measured use against its requests and limits (the sizing table)."""
    for row in t.meter.table():
        print(f"e2e: {t.stack}: usage | {row}", flush=True)
    short = t.meter.short_limits()
    specs = t.meter.specs
    t.ok(f"memory limits cover the measured peak + {MEMORY_MARGIN:.0%}", not short,
         f"{len(specs) - len(short)} of {len(specs)} containers, Jobs included; {'; '.join(short) or 'none short'} "
         f"(working sets from the cgroups: idle {IDLE_SECONDS} s, a burst of {BURST} uploads, each Job's life; "
         "table above)")


@scenario("limits applied as the kubelet applies them")
def limits_applied(t: StackTest) -> None:
    """What the kernel holds for every running container, read back from its cgroup, against its
    spec; and that every process of the container is inside it."""
    checked, wrong, outside = 0, [], []
    for w in t.cluster.workloads.values():
        for p in t.cluster.pods(w.component):
            for c in p.containers:
                if c.cgroup is None or not c.running() or c.pid1 is None:
                    continue
                checked += 1
                held = c.cgroup.applied()
                if (held.memory, held.cpu_milli) != (c.limits.memory, c.limits.cpu_milli):
                    wrong.append(f"{p.name}/{c.name}: kernel {held}, spec {c.limits}")
                members = set(c.cgroup.pids())
                missing = [pid for pid in process_tree(c.pid1) if pid not in members]
                if missing:
                    outside.append(f"{p.name}/{c.name}: pids {missing[:3]}")
                pod_held = p.cgroup.applied()
                pod_spec = Limits.pod([x.limits for x in p.containers])
                if pod_held.memory != pod_spec.memory:
                    wrong.append(f"{p.name}: pod memory {pod_held.memory}, sum of limits {pod_spec.memory}")
    # In a healthy run nothing reaches a limit: an OOM kill or an eviction is the program's to fix.
    pods = [p for w in t.cluster.workloads.values() for p in w.pods]
    killed = [f"{p.name}/{c.name}" for p in pods for c in p.containers if "OOMKilled" in c.reasons]
    evicted = [f"{p.name}: {p.reason}" for p in pods if p.reason.startswith("Evicted")]
    t.ok("limits applied as the kubelet applies them",
         checked > 0 and not wrong and not outside and not killed and not evicted,
         f"{checked} running containers: memory limit and CPU quota as the spec says "
         f"{'everywhere' if not wrong else wrong[:3]}; "
         f"processes outside their container's cgroup: {outside[:3] or 'none'}; OOMKilled {killed or 'none'}; "
         f"evicted {evicted[:2] or 'none'}; CFS periods throttled so far: "
         + ", ".join(f"{key} {t.meter.throttled(key)}" for key in sorted(t.meter.specs) if t.meter.throttled(key)))

