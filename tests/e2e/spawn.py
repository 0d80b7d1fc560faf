"""Start every container and outside service from one thread that lives as long as the runner.

The sandboxes run with bubblewrap's `--die-with-parent` (the outside services with setpriv's
`--pdeathsig`), which is the kernel's parent-death signal. The kernel names the forking
*thread* as the parent, and some kernels fire the signal when that thread ends; forked from
short-lived threads (a restart, a probe loop), containers could then die with them. Forked
from here, they die exactly when the runner dies, however it dies (a SIGKILL included), and
no container outlives it.

`cgroup_join` puts the process into its cgroups before it runs anything, as a container
runtime does: a small shell writes its own pid to each `cgroup.procs` and then execs the
command, so every process the command starts is charged from its first instruction.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

_JOIN = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'


def cgroup_join(procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """`argv` run inside the cgroups whose `cgroup.procs` files are given (exit 125 if one refuses)."""
    return ["/bin/sh", "-c", _JOIN, "e2e-cgroup-join", *map(str, procs_files), "--", *argv]


class _Spawner:
    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], dict[str, Any], Future[subprocess.Popen[bytes]]]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="e2e-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            argv, kwargs, result = self._requests.get()
            try:
                result.set_result(subprocess.Popen(argv, **kwargs))
            except Exception as error:  # handed to the caller, which raises it
                result.set_exception(error)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        result: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((argv, kwargs, result))
        return result.result()


_lock = threading.Lock()
_spawner: _Spawner | None = None


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen`, forked from the runner's long-lived spawner thread."""
    global _spawner
    with _lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.popen(argv, **kwargs)
