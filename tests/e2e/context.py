"""What a scenario sees of a running stack, whether the runner emulates it or kubectl reaches it.

The scenarios in `tests.e2e.scenarios` are written against `Context`: the stack's settings and
secrets, a view of its cluster and clients for its data, and `ok()` to print a line. The
emulated run (`tests.e2e.stack.StackTest`: `tests.e2e.cluster.Cluster`, `tests.e2e.clients.Clients`)
and the kubectl-backed one (`tests.e2e.remote.RemoteTest`: `KubectlCluster`, `KubectlClients`)
each provide it, with the same members for what the shared scenarios read. A scenario that
needs the emulator (faults, signals, limits) is declared so, and takes the emulated context.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional, Union

from tests.e2e.report import Buffer, Report
from tools.harness import Recording


@dataclass
class RunState:
    """What one scenario leaves for a later one."""

    item_id: str = ""
    accepted_uploads: int = 0
    """Uploads answered 200 since `stats_before` was taken."""
    stats_before: Optional[dict[str, Any]] = None
    db_password_inputs: Optional[dict[str, Any]] = None
    """The inputs of the RandomPassword the database password came from (None: configured)."""


class Context:
    stack: str
    config: dict[str, str]
    values: dict[str, str]
    report: Report
    cluster: Any
    clients: Any

    def __init__(self) -> None:
        self.state = RunState()
        self._sink = threading.local()

    def ok(self, scenario: str, ok: bool, detail: str) -> bool:
        sink: Union[Report, Buffer] = getattr(self._sink, "to", None) or self.report
        return sink.line(scenario, ok, detail)

    def reporting_to(self, sink: Optional[Buffer]) -> None:
        """This thread's lines go to `sink` (None: the report itself)."""
        self._sink.to = sink

    def render(self, overrides: Optional[dict[str, Any]] = None) -> Recording:
        raise NotImplementedError

    def service_url(self, name: str) -> str:
        """How the runner reaches a Service's first port."""
        raise NotImplementedError

    def api_url(self) -> str:
        return self.service_url("bundler-api")

    def upload_data_entries(self) -> list[str]:
        """What the API wrote into its upload-data volume (FS_DATA_PATH's parent)."""
        raise NotImplementedError

    def source_migrations(self) -> list[str]:
        """The migrations the image holds, by name."""
        raise NotImplementedError
