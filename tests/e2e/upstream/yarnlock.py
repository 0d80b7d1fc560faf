"""yarn.lock (v1): its entries, what they resolve and require, and editing its patterns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.e2e.upstream.common import UpstreamError


@dataclass(frozen=True)
class LockEntry:
    patterns: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]
    """version, resolved, integrity, ... as written."""
    dependencies: tuple[tuple[str, str], ...]
    """(name, range)"""
    optional: tuple[tuple[str, str], ...] = ()
    """optionalDependencies: (name, range)."""

    @property
    def version(self) -> str:
        return dict(self.fields).get("version", "")


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s,"]+)')


def _unquote(text: str) -> str:
    text = text.strip()
    return json.loads(text) if text.startswith('"') else text


def parse_lock(text: str) -> list[LockEntry]:
    entries: list[LockEntry] = []
    patterns: list[str] = []
    fields: list[tuple[str, str]] = []
    deps: dict[str, list[tuple[str, str]]] = {"dependencies": [], "optionalDependencies": []}
    section = ""

    def flush() -> None:
        if patterns:
            entries.append(LockEntry(tuple(patterns), tuple(fields), tuple(deps["dependencies"]),
                                     tuple(deps["optionalDependencies"])))

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith(" "):
            flush()
            if not line.endswith(":"):
                raise UpstreamError(f"yarn.lock line {number}: expected `pattern, ...:`, got {line!r}")
            patterns = [a or b for a, b in _QUOTED.findall(line[:-1])]
            fields, section = [], ""
            deps = {"dependencies": [], "optionalDependencies": []}
        elif line.startswith("    "):
            if section not in deps:
                raise UpstreamError(f"yarn.lock line {number}: {line.strip()!r} outside a dependency list")
            name, value = [a or b for a, b in _QUOTED.findall(line)][:2]
            deps[section].append((name, value))
        else:
            key, _, value = line.strip().partition(" ")
            if key.endswith(":") and not value:
                section = key[:-1]
            else:
                section = ""
                fields.append((_unquote(key), _unquote(value)))
    flush()
    return entries


def name_of(pattern: str) -> str:
    """`@scope/name@range` -> `@scope/name`; an `alias@npm:real@range` is installed as `alias`."""
    return pattern[: pattern.index("@", 1)]


def by_pattern(entries: Iterable[LockEntry]) -> dict[str, LockEntry]:
    return {p: e for e in entries for p in e.patterns}


def closure(lock: Mapping[str, LockEntry], start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = [p for p in start if p in lock]
    while todo:
        pattern = todo.pop()
        if pattern in seen:
            continue
        seen.add(pattern)
        entry = lock[pattern]
        todo += [f"{n}@{r}" for n, r in entry.dependencies + entry.optional if f"{n}@{r}" in lock]
    return seen


def without_patterns(text: str, drop: set[str]) -> str:
    """The lock text with these patterns taken off their entries (an entry left with none goes)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.strip() and not line.startswith((" ", "#")):
            tokens = [(m.group(0), m.group(1) or m.group(2)) for m in _QUOTED.finditer(line.rstrip()[:-1])]
            kept = [written for written, pattern in tokens if pattern not in drop]
            skipping = not kept
            line = ", ".join(kept) + ":\n"
        if not skipping:
            out.append(line)
    return "".join(out)
