"""What each container really uses, read from its cgroup while the runtime test runs it.

Every container instance of the stack, Jobs included, is sampled every quarter second from
its own cgroup (`tests.e2e.limits`): memory as the working set (usage less inactive file
pages: what `kubectl top` shows and what eviction and the sizing rule use) and CPU time, plus
the CFS periods its quota throttled. Named windows (idle, burst) are time ranges over those
samples; a Job's figures cover its whole life. The figures feed the resource defaults in
Pulumi.yaml and the stack files (the README's "Resources from measurement").
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.e2e.container import Container
from tests.e2e.limits import quantity

SAMPLE_SECONDS = 0.25
# The sizing rule (README, "Resources from measurement"). A memory limit covers the busiest
# peak measured plus this much: a Node heap grows with the size and number of uploads in flight
# beyond what a burst of 12 small uploads shows, and V8 collects lazily.
MEMORY_MARGIN = 1.0
# Requests follow steady use: the idle peak (memory) and the busier window's average (CPU),
# rounded up to these steps.
MEMORY_STEP_MIB, LIMIT_STEP_MIB, CPU_STEP_MILLI = 32, 64, 50


def _round_up(value: float, step: int) -> int:
    return max(step, -(-int(value) // step) * step)


@dataclass
class Sample:
    t: float
    working_set_mib: float
    cpu_seconds: float
    throttled: int


@dataclass
class Use:
    peak_mib: float
    cpu_cores: float
    """Average share of a core over the window (over the life, for a Job)."""


@dataclass
class Meter:
    """Samples every tracked container's cgroup from `start` to `stop`."""

    keys: dict[int, str] = field(default_factory=dict)
    """id(container) -> "component/container"."""
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)
    series: dict[tuple[int, int], list[Sample]] = field(default_factory=dict)
    """(id(container), instance) -> samples."""
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    _containers: list[Container] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def track(self, key: str, c: Container, job: bool) -> None:
        with self._lock:
            self.keys[id(c)] = key
            self.specs.setdefault(key, c.spec)
            self._containers.append(c)
            if job:
                self.jobs.add(key)

    def _sample(self, c: Container) -> None:
        group = c.cgroup
        if group is None:
            return
        memory, cpu = group.memory(), group.cpu_seconds()
        if memory is None or cpu is None:
            return
        with self._lock:
            self.series.setdefault((id(c), c.restarts), []).append(
                Sample(time.monotonic(), memory[0] / 2**20, cpu, group.throttled()))

    def final(self, c: Container) -> None:
        """The last sample of an instance, taken as it exits, before its cgroup is removed."""
        if id(c) in self.keys:
            self._sample(c)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(SAMPLE_SECONDS):
                with self._lock:
                    live = [c for c in self._containers if c.running()]
                for c in live:
                    self._sample(c)
        threading.Thread(target=loop, name="e2e-meter", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.windows[name] = (t0, time.monotonic())

    # -- figures ---------------------------------------------------------------------------

    def use(self, key: str, window: Optional[str]) -> Optional[Use]:
        """The busiest replica's figures in a window (None: the container's whole life)."""
        t0, t1 = self.windows[window] if window else (0.0, float("inf"))
        with self._lock:
            runs = [s for (cid, _), s in self.series.items() if self.keys.get(cid) == key]
        peaks, cpus = [], []
        for samples in runs:
            inside = [s for s in samples if t0 <= s.t <= t1]
            if not inside:
                continue
            peaks.append(max(s.working_set_mib for s in inside))
            # CPU only from an instance that lived through the window (a Job: its own life).
            lived = window is None or (samples[0].t <= t0 + 2 * SAMPLE_SECONDS
                                       and samples[-1].t >= t1 - 2 * SAMPLE_SECONDS)
            span = inside[-1].t - inside[0].t
            cpus.append((inside[-1].cpu_seconds - inside[0].cpu_seconds) / span if lived and span > 0 else 0.0)
        return Use(max(peaks), max(cpus)) if peaks else None

    def throttled(self, key: str) -> int:
        with self._lock:
            runs = [s for (cid, _), s in self.series.items() if self.keys.get(cid) == key and s]
        return sum(s[-1].throttled - s[0].throttled for s in runs)

    def peak(self, key: str) -> float:
        use = self.use(key, None)
        return use.peak_mib if use else 0.0

    def table(self) -> list[str]:
        """One row per container: each window's peak and CPU, its whole life, then its requests and limits."""
        names = list(self.windows)
        head = "container".ljust(26) + "".join(f"{n + ' peak':>12}{n + ' CPU':>11}" for n in names)
        head += f"{'life peak':>11}{'throttled':>11}{'mem req/limit':>16}{'CPU req/limit':>15}{'limit/peak':>12}"
        head += f"{'derived mem':>14}{'derived CPU':>13}"
        rows = [head]
        for key in sorted(self.specs):
            res = self.specs[key].get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            row = key.ljust(26)
            for n in names:
                use = None if key in self.jobs else self.use(key, n)
                row += f"{use.peak_mib:>10.0f}Mi{use.cpu_cores * 1000:>10.0f}m" if use else f"{'-':>12}{'-':>11}"
            peak = self.peak(key)
            ratio = quantity(lim["memory"]) / 2**20 / peak if peak and "memory" in lim else None
            row += f"{peak:>9.0f}Mi{self.throttled(key):>11}"
            row += f"{req.get('memory', '-') + '/' + lim.get('memory', '-'):>16}"
            row += f"{req.get('cpu', '-') + '/' + lim.get('cpu', '-'):>15}"
            row += f"{ratio:>11.2f}x" if ratio else f"{'-':>12}"
            memory, cpu = self.derived(key)
            row += f"{memory:>14}{cpu:>13}"
            rows.append(row)
        return rows

    def derived(self, key: str) -> tuple[str, str]:
        """What the sizing rule makes of the measurements: "request/limit" memory, CPU request."""
        idle = None if key in self.jobs or "idle" not in self.windows else self.use(key, "idle")
        windows = [None] if key in self.jobs else list(self.windows)
        cpu = max((u.cpu_cores for w in windows if (u := self.use(key, w))), default=0.0)
        request = _round_up(idle.peak_mib if idle else self.peak(key), MEMORY_STEP_MIB)
        limit = _round_up(self.peak(key) * (1 + MEMORY_MARGIN), LIMIT_STEP_MIB)
        return f"{request}Mi/{limit}Mi", f"{_round_up(cpu * 1000, CPU_STEP_MILLI)}m"

    def short_limits(self) -> list[str]:
        """Containers whose memory limit does not cover the measured peak plus the margin."""
        short = []
        for key, spec in sorted(self.specs.items()):
            limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
            need = self.peak(key) * (1 + MEMORY_MARGIN)
            if limit is None or quantity(limit) / 2**20 < need:
                short.append(f"{key} limit {limit} < peak {self.peak(key):.0f}Mi x {1 + MEMORY_MARGIN:g}")
        return short
