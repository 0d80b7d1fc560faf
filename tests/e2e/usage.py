"""What each container really uses, measured while the runtime test runs it.

Sampled from /proc every quarter second over a container's process tree (its PID 1 and every
descendant, the probe server included, since it runs inside the app's process): memory as the
proportional set size (PSS) summed over the tree, which counts a page shared by several processes
once in all, as the container's cgroup charges it (summed RSS would count PostgreSQL's shared
buffers once per backend); and CPU time as utime + stime of each live process plus what it
reaped (cutime + cstime), so a short-lived child still counts. The figures feed the resource
defaults in Pulumi.yaml and the stack files (see the README's "Resources from measurement").
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tests.e2e.kubelet import Container

TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.25
# The sizing rule (README, "Resources from measurement"). A memory limit covers the busiest
# peak measured plus this much: a Node heap grows with the size and number of uploads in flight
# beyond what a burst of 12 small uploads shows, and V8 collects lazily.
MEMORY_MARGIN = 1.0
# Requests follow steady use: the idle peak (memory) and the busier window's average (CPU),
# rounded up to these steps.
MEMORY_STEP_MIB, LIMIT_STEP_MIB, CPU_STEP_MILLI = 32, 64, 50
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}


def quantity(text: Any) -> float:
    """A Kubernetes quantity ("250m", "512Mi", "1") as a plain number (cores or bytes)."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _round_up(value: float, step: int) -> int:
    return max(step, -(-int(value) // step) * step)


def _tree(pid1: int) -> list[int]:
    pids, pending = [], [pid1]
    while pending:
        pid = pending.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            pending.extend(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    return pids


def sample(c: Container) -> Optional[tuple[float, float]]:
    """(memory MiB (PSS), CPU seconds so far) of the container's processes, or None if not running."""
    if c.pid1 is None or not c.running():
        return None
    rss_kib, ticks = 0, 0
    for pid in _tree(c.pid1):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
            rss_kib += int(pss.group(1)) if pss else 0
    return rss_kib / 1024, ticks / TICK


@dataclass
class Use:
    peak_mib: float
    cpu_cores: float
    """Average share of a core over the window."""


@dataclass
class Measured:
    """One container (all replicas of it) in one window: the busiest replica's figures."""

    key: str
    spec: dict[str, Any]
    use: Use


class Meter:
    """Measures named windows over every running container of the given pods."""

    def __init__(self, containers: dict[str, list[Container]]) -> None:
        self.containers = containers  # "component/container" -> one Container per replica
        self.windows: dict[str, dict[str, Use]] = {}

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        flat = [(key, c) for key, cs in self.containers.items() for c in cs]
        start = {id(c): (c.pid1, sample(c)) for _, c in flat}
        peaks: dict[int, float] = {}
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                for _, c in flat:
                    got = sample(c)
                    if got:
                        peaks[id(c)] = max(peaks.get(id(c), 0.0), got[0])
                stop.wait(SAMPLE_SECONDS)

        t0 = time.monotonic()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            elapsed = time.monotonic() - t0
            uses: dict[str, Use] = {}
            for key, c in flat:
                pid1, before = start[id(c)]
                after = sample(c)
                if before is None or after is None or pid1 != c.pid1:
                    continue  # restarted or stopped within the window: no honest CPU figure
                use = Use(peaks.get(id(c), after[0]), (after[1] - before[1]) / elapsed)
                old = uses.get(key, use)
                uses[key] = Use(max(old.peak_mib, use.peak_mib), max(old.cpu_cores, use.cpu_cores))
            self.windows[name] = uses

    def table(self, specs: dict[str, dict[str, Any]]) -> list[str]:
        """One row per container: each window's peak and CPU, then its requests and limits."""
        names = list(self.windows)
        head = "container".ljust(24) + "".join(f"{n + ' peak':>14}{n + ' CPU':>12}" for n in names)
        head += f"{'mem req/limit':>18}{'CPU req/limit':>16}{'limit/peak':>12}"
        head += f"{'derived mem':>16}{'derived CPU req':>17}"
        rows = [head]
        for key in sorted(specs):
            res = specs[key].get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            row = key.ljust(24)
            for n in names:
                use = self.windows[n].get(key)
                row += f"{use.peak_mib:>11.0f}Mi{use.cpu_cores * 1000:>11.0f}m" if use else f"{'-':>14}{'-':>12}"
            peak = self.peak(key)
            ratio = quantity(lim["memory"]) / 2**20 / peak if peak and "memory" in lim else None
            row += f"{req.get('memory', '-') + '/' + lim.get('memory', '-'):>18}"
            row += f"{req.get('cpu', '-') + '/' + lim.get('cpu', '-'):>16}"
            row += f"{ratio:>11.2f}x" if ratio else f"{'-':>12}"
            memory, cpu = self.derived(key)
            row += f"{memory:>16}{cpu:>17}"
            rows.append(row)
        return rows

    def derived(self, key: str) -> tuple[str, str]:
        """What the sizing rule makes of the measurements: "request/limit" memory, CPU request."""
        idle = self.windows.get("idle", {}).get(key)
        cpu = max((w[key].cpu_cores for w in self.windows.values() if key in w), default=0.0)
        request = _round_up(idle.peak_mib if idle else self.peak(key), MEMORY_STEP_MIB)
        limit = _round_up(self.peak(key) * (1 + MEMORY_MARGIN), LIMIT_STEP_MIB)
        return f"{request}Mi/{limit}Mi", f"{_round_up(cpu * 1000, CPU_STEP_MILLI)}m"

    def peak(self, key: str) -> float:
        return max((w[key].peak_mib for w in self.windows.values() if key in w), default=0.0)

    def short_limits(self, specs: dict[str, dict[str, Any]]) -> list[str]:
        """Containers whose memory limit does not cover the measured peak plus the margin."""
        short = []
        for key, spec in sorted(specs.items()):
            limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
            need = self.peak(key) * (1 + MEMORY_MARGIN)
            if limit is None or quantity(limit) / 2**20 < need:
                short.append(f"{key} limit {limit} < peak {self.peak(key):.0f}Mi x {1 + MEMORY_MARGIN:g}")
        return short
