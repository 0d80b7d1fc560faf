"""The lines a stack's run prints, held against the lines it declared before it started.

A stack declares every scenario line it will print (`declare`) before anything runs. At the
end (`finish`), a declared line that never came is a FAIL "(no result)", a line nobody
declared is a FAIL too, and the totals count both: a scenario cannot vanish, and none can be
added without being accounted for. Scenarios run in threads report into a `Buffer`, which the
main thread replays after joining them, so a thread's lines are collected, never lost.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Optional, TextIO


@dataclass(frozen=True)
class Line:
    scenario: str
    ok: bool
    detail: str


def seen(lines: list[Line], scenario: str) -> bool:
    return any(line.scenario == scenario for line in lines)


@dataclass
class Buffer:
    """Lines from a scenario that runs in a thread, kept until its caller replays them."""

    lines: list[Line] = field(default_factory=list)

    def line(self, scenario: str, ok: bool, detail: str) -> bool:
        self.lines.append(Line(scenario, ok, detail))
        return ok


@dataclass
class Report:
    stack: str
    out: Optional[TextIO] = None
    """Where lines are printed (None: whatever sys.stdout is at the time)."""
    declared: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def passed(self) -> int:
        return sum(1 for line in self.lines if line.ok)

    @property
    def failed(self) -> int:
        return sum(1 for line in self.lines if not line.ok)

    def declare(self, scenarios: list[str]) -> None:
        repeated = sorted({s for s in scenarios if scenarios.count(s) > 1})
        if repeated:
            raise ValueError(f"scenario lines declared twice: {repeated}")
        self.declared = list(scenarios)

    def line(self, scenario: str, ok: bool, detail: str) -> bool:
        with self.lock:
            if self.declared and scenario not in self.declared:
                ok, detail = False, f"not declared by the stack's plan; {'ok' if ok else 'FAIL'} ({detail})"
            elif seen(self.lines, scenario):
                ok, detail = False, f"printed twice; {'ok' if ok else 'FAIL'} ({detail})"
            self.lines.append(Line(scenario, ok, detail))
            print(f"e2e: {self.stack}: {scenario}: {'ok' if ok else 'FAIL'} ({detail})", file=self.out or sys.stdout,
                  flush=True)
        return ok

    def replay(self, buffer: Buffer) -> None:
        for line in buffer.lines:
            self.line(line.scenario, line.ok, line.detail)

    def finish(self) -> None:
        """A FAIL for each declared line that never came."""
        for scenario in self.declared:
            if not seen(self.lines, scenario):
                self.line(scenario, False, "no result: the scenario that declares it printed nothing")
