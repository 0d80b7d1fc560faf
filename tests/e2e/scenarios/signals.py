"""Stopping (seed risk 6's other half): the API runs under an init as PID 1, an upload in flight
when its pod is deleted completes, an idle API pod leaves its endpoints and exits once its
preStop has run, and the workers and the admin stop promptly on SIGTERM. Each deleted pod is
replaced by its Deployment's controller, as in a cluster."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.e2e import timeouts
from tests.e2e.plan import scenario

if TYPE_CHECKING:
    from tests.e2e.kubelet import Pod
    from tests.e2e.stack import StackTest

# An idle API's exit after its preStop: Node closes its server and exits in well under this.
IDLE_EXIT_SLACK = 5.0


def pre_stop_seconds(pod: Pod) -> float:
    hook = (pod.containers[0].spec.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = (hook.get("exec") or {}).get("command") or []
    return float(command[-1]) if len(command) == 2 and command[0] == "sleep" else 0.0


def _ready_replacement(t: StackTest, component: str, old: list[str]) -> Pod:
    """The pod the Deployment controller made after a deletion, once Ready."""
    def fresh() -> list[Pod]:
        return [p for p in t.cluster.pods(component) if p.name not in old and p.ready]
    t.cluster.wait(lambda: bool(fresh()), timeouts.APPLY)
    found = fresh()
    if not found:
        raise TimeoutError(f"no Ready replacement for {component} within {timeouts.APPLY:.0f} s")
    return found[0]


@scenario("API runs under an init as PID 1", "upload in flight when its API pod is deleted completes",
          "idle API pod leaves its endpoints, then exits after its preStop", "workers pod stops on SIGTERM",
          "admin pod stops on SIGTERM")
def termination(t: StackTest) -> None:
    api = t.cluster.pods("api")
    pre_stop = pre_stop_seconds(api[0])
    pid1 = Path(f"/proc/{api[0].containers[0].pid1}/cmdline").read_bytes().split(b"\0")[0].decode()
    t.ok("API runs under an init as PID 1", pid1.endswith("dumb-init"), f"PID 1 in the API container: {pid1}")

    # An upload in flight when its pod is deleted: sent to the pod itself, so it is that pod's.
    busy = api[0]
    port = busy.containers[0].port("http")
    result: dict[str, Any] = {}
    slow_ms = int((pre_stop + 8) * 1000)
    uploader = threading.Thread(target=lambda: result.update(
        t.clients.upload(f"http://{busy.ip}:{port}", slow_ms=slow_ms)))
    uploader.start()
    time.sleep(2)
    exit_seconds = busy.delete()
    uploader.join(timeouts.REQUEST)
    t.ok("upload in flight when its API pod is deleted completes",
         result.get("status") == 200 and result.get("receipt_valid") is True,
         f"HTTP {result.get('status')} after {result.get('elapsed_ms')} ms; the pod exited "
         f"{exit_seconds:.1f} s after deletion (preStop {pre_stop:.0f} s), exit codes "
         f"{busy.containers[0].exit_codes}")

    others = [p for p in t.cluster.pods("api") if p is not busy]
    idle = others[0] if others else _ready_replacement(t, "api", [busy.name])
    t0 = time.monotonic()
    seconds = idle.delete()
    hook = [e for e in t.events.since(t0, idle.name) if "preStop" in e]
    ran = bool(hook) and hook[0].split(" ")[2] == "ok"
    c = idle.containers[0]
    t.ok("idle API pod leaves its endpoints, then exits after its preStop",
         ran and pre_stop <= seconds <= pre_stop + IDLE_EXIT_SLACK and c.exit_codes[-1:] == [0],
         f"{seconds:.1f} s from deletion to exit (preStop {pre_stop:.0f} s, then at most {IDLE_EXIT_SLACK:.0f} s; "
         f"endpoint removal after {timeouts.ENDPOINT_REMOVAL_DELAY:.0f} s; grace {idle.grace:.0f} s); preStop event "
         f"{hook[:1] or 'MISSING'}; exit code {c.exit_codes[-1:]}")

    for component in ("workers", "admin"):
        pod = t.cluster.pods(component)[0]
        seconds = pod.delete()
        t.ok(f"{component} pod stops on SIGTERM",
             seconds < pod.grace and pod.containers[0].exit_codes[-1:] == [0],
             f"{seconds:.1f} s to exit, exit code {pod.containers[0].exit_codes[-1:]} (grace {pod.grace:.0f} s)")
    # What the controllers made in their place is Ready before the next scenario.
    for component in ("api", "workers", "admin"):
        replicas = t.cluster.workload(component, "Deployment").replicas

        def back(component: str = component, replicas: int = replicas) -> bool:
            return sum(p.ready for p in t.cluster.pods(component)) >= replicas

        t.cluster.wait(back, timeouts.APPLY)
