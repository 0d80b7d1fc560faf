"""The PostgreSQL connection budget: a rule across two sections (processes and data).

`connection_peak` is public so the runtime test can set it beside what PostgreSQL reports in
pg_stat_activity.
"""

from __future__ import annotations

from collections.abc import Mapping

from components.names import PROJECT
from components.settings.processes import MAX_SURGE
from components.settings.reader import Problem, set_command

# PostgreSQL keeps superuser_reserved_connections (3 by default) out of max_connections.
RESERVED_CONNECTIONS = 3
# What each process really opens (read in the bundler's source, see UPSTREAM.md): the API and
# the workers keep a writer AND a reader knex pool (src/arch/db/knexConfig.ts), each up to
# DB_POOL_MAX; the admin's statistics (admin/statsCollector.js) keep one pool of at most 5; the
# migration Job's knexfile is the writer config, so one pool of DB_POOL_MAX.
POOLS_PER_APP_PROCESS = 2
ADMIN_POOL_MAX = 5
# The deep readiness check opens one short-lived PostgreSQL connection per pod and run.
DEEP_CHECK_CONNECTIONS = 1
DEPLOYMENTS = ("api", "workers", "admin")


def _per_process(kind: str, pool_max: int) -> int:
    if kind == "admin":
        return ADMIN_POOL_MAX
    if kind == "migration":
        return pool_max
    return POOLS_PER_APP_PROCESS * pool_max


def connection_peak(replicas: Mapping[str, int], pool_max: int) -> dict[str, dict[str, int]]:
    """The itemised peak of PostgreSQL connections: kind -> {"pods", "per_process", "total"}.

    Kinds are the steady Deployments (`api`, `workers`, `admin`), then whichever is larger of
    the migration Job (`migration`) and the rolling-update surge pods (`api-surge`, ...): the
    Job finishes before any Deployment rolls, so the two never overlap. `deep-check` is the
    readiness probe's transient connection, one per bundler pod that exists at the peak.
    Each bundler pod runs one such process.
    """
    steady = {k: {"pods": replicas.get(k, 1), "per_process": _per_process(k, pool_max)} for k in DEPLOYMENTS}
    surge = {f"{k}-surge": {"pods": MAX_SURGE, "per_process": _per_process(k, pool_max)} for k in DEPLOYMENTS}
    migration = {
        "migration": {"pods": replicas.get("migration", 1), "per_process": _per_process("migration", pool_max)}
    }

    def total(items: Mapping[str, Mapping[str, int]]) -> int:
        return sum(v["pods"] * v["per_process"] for v in items.values())

    # A surge pod also runs the deep check; the Job runs none.
    surge_cost = total(surge) + DEEP_CHECK_CONNECTIONS * sum(v["pods"] for v in surge.values())
    extra = surge if surge_cost >= total(migration) else migration
    probed = sum(v["pods"] for k, v in {**steady, **extra}.items() if k != "migration")
    peak = {**steady, **extra, "deep-check": {"pods": probed, "per_process": DEEP_CHECK_CONNECTIONS}}
    return {k: {**v, "total": v["pods"] * v["per_process"]} for k, v in peak.items()}


def peak_connections(replicas: Mapping[str, int], pool_max: int) -> int:
    return sum(v["total"] for v in connection_peak(replicas, pool_max).values())


def connection_budget(
    replicas: Mapping[str, int], pool_max: int, max_connections: int, in_cluster: bool
) -> list[Problem]:
    """Peak PostgreSQL connections (see `connection_peak`) must fit in max_connections less the
    superuser-reserved ones."""
    usable = max_connections - RESERVED_CONNECTIONS
    peak = peak_connections(replicas, pool_max)
    if peak <= usable:
        return []
    items = connection_peak(replicas, pool_max)
    parts = " + ".join(f"{k} {v['pods']} x {v['per_process']}" for k, v in items.items())
    where = "the in-cluster PostgreSQL's max_connections" if in_cluster else "the database's max_connections"
    fitting = next((p for p in range(pool_max - 1, 0, -1) if peak_connections(replicas, p) <= usable), None)
    needed = str(peak + RESERVED_CONNECTIONS)
    if fitting is None:
        fix = set_command("dbMaxConnections", needed)
    else:
        fix = f"{set_command('dbPoolMax', str(fitting))}  (or raise {PROJECT}:dbMaxConnections to {needed})"
    return [
        Problem(
            "dbPoolMax",
            f"connection budget exceeded: at peak {parts} (pods x connections; api and workers keep a writer and a"
            f" reader pool of dbPoolMax {pool_max} each, admin a pool of {ADMIN_POOL_MAX}) = {peak} connections,"
            f" but {where} is {max_connections} ({usable} usable after {RESERVED_CONNECTIONS} superuser-reserved).",
            fix,
        )
    ]
