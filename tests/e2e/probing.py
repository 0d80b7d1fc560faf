"""The kubelet's loops for one container: its probes and its restarts.

Each probe (startup, readiness, liveness) runs on its period (from one start to the next), with
its timeout and thresholds, only while the container runs and has started; readiness flips the
container's Ready state, a failed liveness or startup probe restarts it. `supervise` restarts an
exited container per the pod's `restartPolicy`, with the kubelet's backoff (at once, then 10 s
doubling to 5 minutes); under `Never` the pod ends Succeeded or Failed.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.e2e.container import Container
    from tests.e2e.kubelet import Pod

# As the kubelet: the first restart comes at once, then 10 s doubling to 5 minutes.
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


def probe_loop(pod: Pod, c: Container, kind: str) -> None:
    """One probe of one container (startup, readiness or liveness), on its period, with its
    thresholds, until the pod stops."""
    spec = c.spec.get(f"{kind}Probe")
    if not spec:
        if kind == "readiness":
            # No readiness probe: ready once started.
            while not pod.stopped.is_set():
                c.ready = c.running() and c.started and not c.terminating
                pod.stopped.wait(0.2)
        return
    period = float(spec.get("periodSeconds", 10))
    failures_allowed = int(spec.get("failureThreshold", 3))
    successes_needed = int(spec.get("successThreshold", 1))
    pod.stopped.wait(float(spec.get("initialDelaySeconds", 0)))
    failures = successes = 0
    generation = c.restarts
    while not pod.stopped.is_set():
        if generation != c.restarts:  # a new container instance: probes start over
            generation, failures, successes = c.restarts, 0, 0
            if kind == "startup":
                c.started = False
        wanted = (kind == "startup" and not c.started) or (kind != "startup" and c.started)
        if not wanted or not c.running() or c.terminating or c.held:
            pod.stopped.wait(0.2)
            continue
        tick = time.monotonic()
        result = c.probe(spec)
        if kind == "readiness":
            c.last_readiness = result
        if result.ok:
            failures, successes = 0, successes + 1
            if kind == "startup":
                c.started = True
                pod.events.add(pod.name, f"{c.name} startup probe passed")
            elif kind == "readiness" and successes >= successes_needed and not c.ready:
                c.ready = True
                pod.events.add(pod.name, f"{c.name} ready")
        else:
            successes, failures = 0, failures + 1
            if kind == "readiness" and failures >= failures_allowed and c.ready:
                c.ready = False
                pod.events.add(pod.name, f"{c.name} not ready: {result.detail}")
            elif kind in ("liveness", "startup") and failures >= failures_allowed:
                pod.events.add(pod.name, f"{c.name} {kind} probe failed {failures}x: {result.detail}")
                failures = 0
                threading.Thread(target=restart, args=(pod, c, f"{kind} probe failed"), daemon=True).start()
                pod.stopped.wait(1.0)
        pod.stopped.wait(max(0.0, period - (time.monotonic() - tick)))


def restart(pod: Pod, c: Container, reason: str) -> None:
    """What a failed liveness (or startup) probe does: stop the container within the pod's grace
    period; `supervise` then starts it again."""
    with c.lock:
        if c.running() and not c.terminating:
            c.kill(pod.grace, reason)


def supervise(pod: Pod, c: Container) -> None:
    """Restart per restartPolicy when the container exits; Never ends the pod."""
    backoff = 0.0
    while not pod.stopped.is_set():
        if c.proc is None or c.proc.poll() is None or c.terminating:
            pod.stopped.wait(0.2)
            continue
        with c.lock:
            if c.proc.poll() is None or c.terminating:
                continue
            c.note_exit("exited")
            c.ready = False
            if c.held or pod.deleted:
                pod.stopped.wait(0.2)
                continue
            code = c.exit_codes[-1]
            if pod.restart_policy == "Never" or (pod.restart_policy == "OnFailure" and code == 0):
                done = all(x.exit_codes and not x.running() for x in pod.containers)
                if done:
                    ok = all(x.exit_codes[-1] == 0 for x in pod.containers)
                    pod.phase = "Succeeded" if ok else "Failed"
                return
            c.waiting = f"CrashLoopBackOff: last exit {code} ({c.reasons[-1]})" if backoff else ""
        if pod.stopped.wait(backoff):
            return
        backoff = BACKOFF_START if backoff == 0 else min(BACKOFF_MAX, backoff * 2)
        with c.lock:
            if c.held or pod.deleted or c.running():
                continue
            c.restarts += 1
            c.start()
