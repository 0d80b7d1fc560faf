"""What `pulumi up` brings up, in the program's order; and a `pulumi up` whose migration fails.

Seed risk 3 (migration races): the Deployments wait for the migration Job, so a Job that fails
leaves every Deployment's new pods unstarted, while the pods already serving keep serving.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.e2e import timeouts
from tests.e2e.context import Context
from tests.e2e.plan import scenario

if TYPE_CHECKING:
    from tests.e2e.stack import StackTest


def workload_lines(t: Context) -> list[str]:
    return [*(f"{w.obj.kind.lower()} {w.obj.name}" for w in t.cluster.workloads.values()
              if w.component != "migration"), "migration job"]


def migrations_complete(t: Context, succeeded: bool) -> tuple[bool, str]:
    """Whether knex_migrations holds every migration the image has, and what was seen."""
    expected = t.source_migrations()
    if not succeeded:
        return False, "the Job did not succeed"
    rows = t.clients.sql("SELECT name FROM knex_migrations ORDER BY name").splitlines()
    applied = sorted(r.rsplit(".", 1)[0] for r in rows)
    return (applied == expected and len(expected) > 0,
            f"knex_migrations holds {len(applied)} of the {len(expected)} migrations in the image")


@scenario(lines=workload_lines, gate=True)
def applied(t: StackTest) -> None:
    """Every workload done as the provider awaits it, in dependency order."""
    started = time.monotonic()
    workloads = t.cluster.apply(timeout=timeouts.APPLY)
    elapsed = time.monotonic() - started
    for w in workloads.values():
        if w.component == "migration":
            continue
        pods = ", ".join(f"{p.name} {p.phase}" if w.obj.kind == "Job"
                         else f"{p.name} ready" if p.ready else f"{p.name}: {t.cluster.why(p)}" for p in w.pods)
        t.ok(f"{w.obj.kind.lower()} {w.obj.name}", w.state == "done",
             f"{w.state}{': ' + w.detail if w.detail else ''}; {pods or 'no pod created'}")
    job = t.cluster.workload("migration", "Job")
    container = job.template["spec"]["containers"][0]
    refs = sorted(e["name"] for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {}))
    if job.state == "done":
        complete, seen = migrations_complete(t, True)
    else:
        complete = False
        log = job.pods[-1].containers[0].log_tail(40).splitlines() if job.pods else ["no pod"]
        errors = [line.strip() for line in log if "Error" in line] or log[-1:]
        seen = f"last pod's log: {errors[0][:200] if errors else 'empty'}"
    t.ok("migration job", job.state == "done" and complete,
         f"{job.state}{' ' + job.detail if job.detail else ''}; {seen}; it receives only the secrets {refs} and "
         f"the wallet file; the stack came up in {elapsed:.0f} s")


@scenario("migration Job that cannot reach its database fails; no Deployment starts")
def failed_migration(t: StackTest) -> None:
    """A second `up` while PostgreSQL is down: the Job fails, and the Deployments' new pods,
    planned, are never created, while the pods already serving stay."""
    stop, _ = t.data_service("postgres")
    stop()
    job = t.cluster.workload("migration", "Job")
    deployments = [w for w in t.cluster.workloads.values() if w.obj.kind == "Deployment"]
    serving = {w.component: [p.name for p in t.cluster.pods(w.component)] for w in deployments}
    t0 = time.monotonic()
    t.cluster.apply(timeout=timeouts.APPLY, only={job.obj.key, *(w.obj.key for w in deployments)})
    planned = {w.obj.key: {p.name for p in w.planned} for w in deployments}
    created = sorted(p.name for w in deployments for p in w.pods if p.name in planned[w.obj.key])
    still = all(set(names) <= {p.name for p in t.cluster.pods(component)} for component, names in serving.items())
    log = job.pods[-1].containers[0].log_tail(3) if job.pods else ""
    t.ok("migration Job that cannot reach its database fails; no Deployment starts",
         job.state == "failed" and all(w.state == "blocked" for w in deployments)
         and all(planned.values()) and not created and still,
         f"Job {job.state} ({job.detail}) after {time.monotonic() - t0:.0f} s; Deployments "
         f"{sorted({w.state for w in deployments})}; new pods planned {sum(len(v) for v in planned.values())}, "
         f"created {len(created)} {created or ''}; the pods already serving still run: {still}; "
         f"last log: {log[-200:]}")
