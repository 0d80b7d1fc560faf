"""Resource limits as the kubelet enforces them: a cgroup per pod and per container.

The kubelet gives each pod a cgroup limited to the sum of its containers' limits, and each
container a cgroup of its own: `resources.limits.memory` is the memory limit (over it, the
kernel's OOM killer kills a process of the container, and the runtime reports the container
`OOMKilled`), `limits.cpu` a CFS quota per 100 ms period, `requests.cpu` the CPU weight
(shares). The runner does the same under its own cgroup (it never touches the machine's
others), with cgroup v1 (`memory`, `cpu`, `cpuacct` hierarchies) or v2 (one hierarchy),
whichever the machine has, and reads usage back from the same files the kubelet's metrics
come from: the working set (usage less inactive file pages, what `kubectl top` shows and
eviction uses) and CPU time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CFS_PERIOD_US = 100_000
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
V1_CONTROLLERS = ("memory", "cpu", "cpuacct")


class CgroupError(RuntimeError):
    """The machine does not let the runner create the cgroups it needs; says what is missing."""


def quantity(text: Any) -> float:
    """A Kubernetes quantity ("250m", "512Mi", "1") as a plain number (cores or bytes)."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Limits:
    """A container's resources as the kernel gets them (None: unlimited / no request)."""

    memory: Optional[int] = None
    cpu_milli: Optional[int] = None
    cpu_request_milli: Optional[int] = None

    @classmethod
    def of(cls, container: dict[str, Any]) -> Limits:
        res = container.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        # As the API server defaults it: a limit without a request requests the limit.
        cpu_request = requests.get("cpu", limits.get("cpu"))
        return cls(memory=int(quantity(limits["memory"])) if "memory" in limits else None,
                   cpu_milli=round(quantity(limits["cpu"]) * 1000) if "cpu" in limits else None,
                   cpu_request_milli=round(quantity(cpu_request) * 1000) if cpu_request is not None else None)

    @classmethod
    def pod(cls, containers: list[Limits]) -> Limits:
        """The pod cgroup's limits: the sum, where every container sets one (else unlimited)."""
        def total(values: list[Optional[int]]) -> Optional[int]:
            return None if any(v is None for v in values) else sum(v for v in values if v is not None)
        return cls(total([c.memory for c in containers]), total([c.cpu_milli for c in containers]),
                   sum(c.cpu_request_milli or 0 for c in containers) or None)


def _own_cgroups() -> tuple[str, dict[str, Path]]:
    """("v1" or "v2", controller -> this process's cgroup directory)."""
    mounts: dict[str, Path] = {}
    unified: Optional[Path] = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup":
            for controller in V1_CONTROLLERS:
                if controller in options:
                    mounts[controller] = Path(fields[4])
        elif fstype == "cgroup2":
            unified = Path(fields[4])
    membership = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            membership[controller] = path.lstrip("/")
    if all(c in mounts for c in V1_CONTROLLERS):
        return "v1", {c: mounts[c] / membership[c] for c in V1_CONTROLLERS}
    if unified is not None and "" in membership:
        return "v2", {"": unified / membership[""]}
    raise CgroupError("no cgroup v1 memory, cpu and cpuacct hierarchies and no cgroup v2 mount: the runner "
                      "cannot enforce limits; it needs a Linux machine with cgroups writable as root")


class Cgroup:
    """One cgroup, as a directory per v1 hierarchy or one v2 directory."""

    def __init__(self, version: str, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs

    @classmethod
    def under_runner(cls, name: str) -> Cgroup:
        """`name` below the runner's own cgroup (created; a leftover of an earlier run removed first)."""
        version, own = _own_cgroups()
        if version == "v2":
            _enable_v2_controllers(own[""])
        group = cls(version, {k: v / name for k, v in own.items()})
        group.remove()
        return group.made()

    def made(self) -> Cgroup:
        for path in set(self.dirs.values()):
            path.mkdir(exist_ok=True)
        if self.version == "v2":
            _enable_v2_controllers(self.dirs[""])
        return self

    def child(self, name: str, create: bool = True) -> Cgroup:
        group = Cgroup(self.version, {k: v / name for k, v in self.dirs.items()})
        return group.made() if create else group

    def _file(self, controller: str, name: str) -> Path:
        return self.dirs["" if self.version == "v2" else controller] / name

    @property
    def procs_files(self) -> list[Path]:
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def set_limits(self, limits: Limits) -> None:
        # The kubelet's shares: 1024 per core requested, at least 2.
        shares = max(2, (limits.cpu_request_milli or 2) * 1024 // 1000)
        if self.version == "v1":
            if limits.memory is not None:
                self._file("memory", "memory.limit_in_bytes").write_text(str(limits.memory))
            quota = -1 if limits.cpu_milli is None else limits.cpu_milli * CFS_PERIOD_US // 1000
            self._file("cpu", "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            self._file("cpu", "cpu.cfs_quota_us").write_text(str(quota))
            self._file("cpu", "cpu.shares").write_text(str(shares))
        else:
            self._file("", "memory.max").write_text("max" if limits.memory is None else str(limits.memory))
            v2_quota = "max" if limits.cpu_milli is None else str(limits.cpu_milli * CFS_PERIOD_US // 1000)
            self._file("", "cpu.max").write_text(f"{v2_quota} {CFS_PERIOD_US}")
            # The kubelet's conversion of shares to cgroup v2 weight (1..10000).
            self._file("", "cpu.weight").write_text(str(1 + ((shares - 2) * 9999) // 262142))

    def applied(self) -> Limits:
        """What the kernel holds, read back (None where unlimited)."""
        if self.version == "v1":
            memory = int(self._file("memory", "memory.limit_in_bytes").read_text())
            quota = int(self._file("cpu", "cpu.cfs_quota_us").read_text())
            period = int(self._file("cpu", "cpu.cfs_period_us").read_text())
            shares = int(self._file("cpu", "cpu.shares").read_text())
            return Limits(memory if memory < 2**62 else None, None if quota < 0 else quota * 1000 // period,
                          shares * 1000 // 1024)
        raw_memory = self._file("", "memory.max").read_text().strip()
        raw_quota, raw_period = self._file("", "cpu.max").read_text().split()
        return Limits(None if raw_memory == "max" else int(raw_memory),
                      None if raw_quota == "max" else int(raw_quota) * 1000 // int(raw_period), None)

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        with contextlib.suppress(OSError):
            found = re.search(r"^oom_kill (\d+)$", self._file("memory", name).read_text(), re.MULTILINE)
            return int(found.group(1)) if found else 0
        return 0

    def memory(self) -> Optional[tuple[int, int]]:
        """(working set, usage) in bytes, or None once the cgroup is gone."""
        try:
            if self.version == "v1":
                usage = int(self._file("memory", "memory.usage_in_bytes").read_text())
                stat, key = self._file("memory", "memory.stat").read_text(), "total_inactive_file"
            else:
                usage = int(self._file("", "memory.current").read_text())
                stat, key = self._file("", "memory.stat").read_text(), "inactive_file"
        except OSError:
            return None
        found = re.search(rf"^{key} (\d+)$", stat, re.MULTILINE)
        inactive = int(found.group(1)) if found else 0
        return max(0, usage - inactive), usage

    def cpu_seconds(self) -> Optional[float]:
        try:
            if self.version == "v1":
                return int(self._file("cpuacct", "cpuacct.usage").read_text()) / 1e9
            found = re.search(r"^usage_usec (\d+)$", self._file("", "cpu.stat").read_text(), re.MULTILINE)
            return int(found.group(1)) / 1e6 if found else None
        except OSError:
            return None

    def throttled(self) -> int:
        """CFS periods in which the quota stopped the cgroup (nr_throttled)."""
        with contextlib.suppress(OSError):
            found = re.search(r"^nr_throttled (\d+)$", self._file("cpu", "cpu.stat").read_text(), re.MULTILINE)
            return int(found.group(1)) if found else 0
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in set(self.dirs.values()):
            for procs in directory.rglob("cgroup.procs") if directory.exists() else []:
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(p) for p in procs.read_text().split())
        return sorted(found)

    def remove(self) -> None:
        """Kill what is left inside, then remove the directories, deepest first."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for directory in set(self.dirs.values()):
            if not directory.exists():
                continue
            for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()


def _enable_v2_controllers(directory: Path) -> None:
    """Children of `directory` get the memory and cpu controllers; v2 refuses that where the
    directory itself holds processes, which is where a delegated cgroup is needed."""
    wanted = {"memory", "cpu"}
    available = set((directory / "cgroup.controllers").read_text().split())
    if not wanted <= available:
        raise CgroupError(f"cgroup v2 at {directory} offers {sorted(available)}, not memory and cpu: run the test in a "
                          "cgroup with those controllers delegated (e.g. `systemd-run --scope -p Delegate=yes`)")
    try:
        (directory / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    except OSError as error:
        raise CgroupError(f"cgroup v2: cannot enable memory and cpu below {directory} ({error}); run the test in a "
                          "delegated cgroup with no processes of its own (e.g. `systemd-run --scope -p "
                          "Delegate=yes`)") from error


def remove_leftovers(prefix: str) -> list[str]:
    """Every cgroup named `prefix`* below the runner's own (what a killed run left); their names."""
    try:
        version, own = _own_cgroups()
    except CgroupError:
        return []
    names = sorted({p.name for d in own.values() if d.exists() for p in d.iterdir()
                    if p.is_dir() and p.name.startswith(prefix)})
    for name in names:
        Cgroup(version, {k: v / name for k, v in own.items()}).remove()
    return names
