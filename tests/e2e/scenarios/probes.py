"""Probes that mean something (seed risk 10): readiness takes a pod out of its Service when a
dependency it needs is gone and brings it back after, without a restart; liveness restarts a
worker that is frozen; and every bound a line checks is stated with its margin."""

from __future__ import annotations

import http.client
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from tests.e2e import timeouts
from tests.e2e.context import Context
from tests.e2e.network import count_syns, partition, syns_counted
from tests.e2e.plan import scenario

if TYPE_CHECKING:
    from tests.e2e.kubelet import Pod
    from tests.e2e.stack import StackTest

# New connections per API replica in each phase of the Service check.
REQUESTS_PER_REPLICA = 10


def probe_bound(pod: Pod, probe: str = "readiness") -> tuple[float, str]:
    """The longest a probe can take to act once its check starts failing: failureThreshold probes
    one period apart, the last taking its whole timeout; plus the loaded machine's slack."""
    spec = pod.containers[0].spec[f"{probe}Probe"]
    threshold, period = float(spec.get("failureThreshold", 3)), float(spec.get("periodSeconds", 10))
    timeout = float(spec.get("timeoutSeconds", 1))
    bound = threshold * period + timeout
    return bound + timeouts.PROBE_SCHEDULING_SLACK, (
        f"bound failureThreshold x period + timeout = {bound:.0f} s + {timeouts.PROBE_SCHEDULING_SLACK:.0f} s slack")


def _requests(address: str, port: int, source: str, count: int) -> list[int]:
    """`count` GET /health on new connections from `source`; each status, 0 when refused."""
    statuses = []
    for _ in range(count):
        conn = http.client.HTTPConnection(address, port, timeout=5, source_address=(source, 0))
        try:
            conn.request("GET", "/health")
            statuses.append(conn.getresponse().status)
        except OSError:
            statuses.append(0)
        finally:
            conn.close()
    return statuses


@scenario("API Service sends new connections only to Ready replicas, spread across them")
def service_follows_readiness(t: StackTest) -> None:
    """One API replica loses the cache Redis (its readiness checks it; its liveness does not):
    once NotReady it leaves the Service's endpoints, and connections through the Service reach
    only the others; once Ready again it gets its share. Counted inside each pod, by the
    connections' source (the node's outside address, which no probe uses)."""
    api = t.cluster.pods("api")
    victim, others = api[-1], api[:-1]
    c = t.cluster.config()
    cache = t.cluster.hosts[c["ELASTICACHE_HOST"]][0]
    service = next(s for s in t.cluster.services.services if s.name == "bundler-api")
    port = int(service.ports[0]["port"])
    target = service.cluster_ip or ""
    source = t.cluster.net.outside_gateway
    app_port = victim.containers[0].port(service.ports[0].get("targetPort", port))
    for p in api:
        count_syns(p.netns, source, app_port)
    bound, how = probe_bound(victim)

    def phase() -> tuple[dict[str, int], list[int]]:
        before = {p.name: syns_counted(p.netns) for p in api}
        statuses = _requests(target, port, source, REQUESTS_PER_REPLICA * len(api))
        return {p.name: syns_counted(p.netns) - before[p.name] for p in api}, statuses

    partition(victim.netns, cache, int(c["ELASTICACHE_PORT"]), on=True)
    try:
        took = t.cluster.wait(lambda: not victim.ready, bound)
        out = t.cluster.wait(lambda: all(e.pod != victim.name for e in t.cluster.services.current
                                         .get(("bundler-api", port), [])), 5)
        down, down_statuses = phase()
    finally:
        partition(victim.netns, cache, int(c["ELASTICACHE_PORT"]), on=False)
    back = t.cluster.wait(lambda: victim.ready, timeouts.RECOVERY)
    t.cluster.wait(lambda: any(e.pod == victim.name for e in t.cluster.services.current
                               .get(("bundler-api", port), [])), 5)
    up, up_statuses = phase()
    answered_down = sum(1 for s in down_statuses if s == 200)
    answered_up = sum(1 for s in up_statuses if s == 200)
    errors = t.cluster.services.errors
    ok = (not errors and took is not None and out is not None and back is not None and down[victim.name] == 0
          and all(down[p.name] > 0 for p in others) and sum(down.values()) == answered_down
          and answered_down == (len(down_statuses) if others else 0)
          and all(n > 0 for n in up.values()) and sum(up.values()) == answered_up == len(up_statuses))
    t.ok("API Service sends new connections only to Ready replicas, spread across them", ok,
         f"{victim.name} cut from the cache: NotReady after {_s(took)} s ({how}; margin {_margin(bound, took)}), "
         f"out of the endpoints {_s(out)} s later; {len(down_statuses)} connections through {target}:{port} "
         f"reached {down} ({answered_down} answered); Ready again {_s(back)} s after the cut ended, then "
         f"{len(up_statuses)} connections reached {up} ({answered_up} answered); rules the kernel refused: "
         f"{errors[-1:] or 'none'}")


def _s(value: Any) -> str:
    return "never" if value is None else f"{value:.1f}"


def _margin(bound: float, took: Any) -> str:
    return "none" if took is None else f"{bound - took:.1f} s"


def _outage(t: StackTest, component: str, affected: list[Pod], label: str) -> None:
    stop, start = t.data_service(component)
    restarts = {p.name: p.containers[0].restarts for p in affected}
    bound, how = max(probe_bound(p) for p in affected)
    stop()
    t0 = time.monotonic()  # from when the service is down
    took = t.cluster.wait(lambda: all(not p.ready for p in affected), bound)
    not_ready = {p.name: round(time.monotonic() - t0, 1) for p in affected if not p.ready}
    t.ok(f"{label} down: pods NotReady", took is not None,
         f"{', '.join(p.name for p in affected)} NotReady after {_s(took)} s ({how}; margin {_margin(bound, took)}); "
         f"{not_ready}")
    start()
    back = t.cluster.wait(lambda: all(p.ready for p in affected), timeouts.RECOVERY)
    same = all(p.containers[0].restarts == restarts[p.name] for p in affected)
    t.ok(f"{label} back: pods Ready without a restart", back is not None and same,
         f"Ready {_s(back)} s after it returned (within {timeouts.RECOVERY:.0f} s); restarts "
         f"{ {p.name: p.containers[0].restarts - restarts[p.name] for p in affected} }")


@scenario("cache Redis down: pods NotReady", "cache Redis back: pods Ready without a restart")
def cache_outage(t: StackTest) -> None:
    _outage(t, "redis-cache", t.cluster.pods("api"), "cache Redis")


@scenario("PostgreSQL down: pods NotReady", "PostgreSQL back: pods Ready without a restart")
def postgres_outage(t: StackTest) -> None:
    _outage(t, "postgres", t.cluster.pods("api") + t.cluster.pods("workers"), "PostgreSQL")


@scenario("frozen worker (SIGSTOP) restarted by its liveness probe")
def frozen_worker(t: StackTest) -> None:
    pod = t.cluster.pods("workers")[0]
    c = pod.containers[0]
    pid = c.app_pid("lib/jobs/allWorkers.js")
    before = c.restarts
    if pid is None:
        t.ok("frozen worker (SIGSTOP) restarted by its liveness probe", False, "no worker process found")
        return
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    liveness, how = probe_bound(pod, "liveness")
    # A stopped process cannot act on SIGTERM: the restart waits out the grace period.
    bound = liveness + pod.grace + timeouts.REAP
    took = t.cluster.wait(lambda: c.restarts > before and c.running(), bound)
    ready = t.cluster.wait(lambda: pod.ready, timeouts.RECOVERY) if took is not None else None
    t.ok("frozen worker (SIGSTOP) restarted by its liveness probe", took is not None and ready is not None,
         f"restarted after {_s(took)} s (liveness {how}, + grace {pod.grace:.0f} s + {timeouts.REAP:.0f} s to reap; "
         f"margin {_margin(bound, took)}), Ready again after {_s(ready)} s; "
         f"{[e for e in t.events.since(t0, pod.name) if 'liveness' in e][:1]}")


@scenario("worker liveness sees the queue connection, with or without NAT", remote=True)
def worker_liveness_source(t: Context) -> None:
    """Which address the queue Redis sees for the workers: the pod IP, or the node's (NAT)."""
    pods = t.cluster.pods("workers")

    def sources() -> list[str]:
        listing = t.clients.redis("queue", "CLIENT", "LIST")
        return sorted({kv.split("=", 1)[1].rsplit(":", 1)[0] for line in listing.splitlines()
                       for kv in line.split() if kv.startswith("addr=") and "name=bull:" in line})

    t.cluster.wait(lambda: bool(sources()), 30)
    seen = sources()
    nat = not any(p.ip in seen for p in pods)
    live = all(p.containers[0].running() and p.ready for p in pods)
    t.ok("worker liveness sees the queue connection, with or without NAT", live and bool(seen),
         f"{'behind NAT' if nat else 'without NAT'}: queue Redis sees BullMQ connections from {seen}; worker pod "
         f"IPs {[p.ip for p in pods]}; liveness passing, restarts {[p.containers[0].restarts for p in pods]}")
