"""A stack's plan: the scenarios it runs, in order, and the lines each declares it will print.

`@scenario("line", ...)` declares a scenario's lines (or `lines=` a function of the context,
for lines that depend on what the stack renders, such as one per workload). `run_plan`
declares every line of the plan to the report before anything runs, then runs each step: a
scenario that raises gets a FAIL for each of its lines still missing, with the exception's
first line; one that returns without printing a declared line gets a FAIL "(no result)"; a
step of several scenarios runs them in threads, each into its own buffer, replayed in order
once all have joined. Once a step marked `gate` fails, the rest are not run, and each of their
lines is a FAIL saying so. The caller ends with `Report.finish`, which fails what never came.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from tests.e2e.context import Context
from tests.e2e.report import Buffer, Report, seen


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Any], Any]
    names: tuple[str, ...] = ()
    dynamic: Optional[Callable[[Any], list[str]]] = None
    remote: bool = False
    """Also runs through kubectl on a real cluster (tests.e2e.remote)."""
    gate: bool = False
    """The rest of the plan needs this step's lines to pass."""

    def lines(self, t: Context) -> list[str]:
        return [*self.names, *(self.dynamic(t) if self.dynamic else [])]


def scenario(*names: str, lines: Optional[Callable[[Any], list[str]]] = None, remote: bool = False,
             gate: bool = False) -> Callable[[Callable[[Any], Any]], Scenario]:
    def wrap(fn: Callable[[Any], Any]) -> Scenario:
        return Scenario(fn.__name__, fn, names, lines, remote, gate)
    return wrap


Step = Union[Scenario, tuple[Scenario, ...]]


def _scenarios(step: Step) -> tuple[Scenario, ...]:
    return step if isinstance(step, tuple) else (step,)


def declared(t: Context, plan: Sequence[Step]) -> list[str]:
    return [line for step in plan for s in _scenarios(step) for line in s.lines(t)]


def run_one(t: Context, s: Scenario, sink: Union[Report, Buffer]) -> bool:
    """Run a scenario; True when every line it declares was printed ok."""
    names = s.lines(t)
    t.reporting_to(sink if isinstance(sink, Buffer) else None)
    try:
        s.run(t)
    except Exception as error:  # a crash of a scenario is a FAIL of each of its lines, never a skip
        first = (str(error).strip().splitlines() or [""])[0][:300]
        traceback.print_exc()
        for name in names:
            if not seen(sink.lines, name):
                sink.line(name, False, f"{type(error).__name__} in {s.name}: {first}")
    finally:
        t.reporting_to(None)
    for name in names:
        if not seen(sink.lines, name):
            sink.line(name, False, f"no result: {s.name} returned without printing it")
    return all(any(line.scenario == name and line.ok for line in sink.lines) for name in names)


def run_step(t: Context, step: Step) -> bool:
    scenarios = _scenarios(step)
    if len(scenarios) == 1:
        return run_one(t, scenarios[0], t.report)
    buffers = [Buffer() for _ in scenarios]
    results: list[bool] = [False] * len(scenarios)

    def one(i: int) -> None:
        results[i] = run_one(t, scenarios[i], buffers[i])

    threads = [threading.Thread(target=one, args=(i,), name=f"scenario-{s.name}") for i, s in enumerate(scenarios)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for buffer in buffers:
        t.report.replay(buffer)
    return all(results)


def run_plan(t: Context, plan: Sequence[Step], extra: Sequence[str] = ()) -> None:
    """Declare the plan's lines (and `extra`, which the caller prints), then run it."""
    t.report.declare([*declared(t, plan), *extra])
    blocked = ""
    for step in plan:
        if blocked:
            for s in _scenarios(step):
                for name in s.lines(t):
                    t.report.line(name, False, f"not run: {blocked}")
            continue
        if not run_step(t, step) and any(s.gate for s in _scenarios(step)):
            blocked = f"{'/'.join(s.name for s in _scenarios(step))} failed, and the rest needs it"
