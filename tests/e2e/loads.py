"""What the bundler's processes loaded during a run, against what the image ships.

Every container of the bundler image gets tests/e2e/loads.js preloaded first (the runner's own
addition to NODE_OPTIONS; the README's runner table says so), writing its records into the
stack's `loads/` directory. `judge` then asks three things of the whole run:
- every file under /app that a process loaded or read is in the traced set (what image/tracer keeps);
- no require that failed, and no file under /app that fs did not find, exists in the untraced
  tree (the builder's /app): else the trace lost a file the code looks for, even where the code
  carries on without it (an optional native addon, a fallback);
- nothing was loaded from outside /app but the program's own scripts (ConfigMap mounts) and
  the base image's yarn.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

HERE = Path(__file__).resolve().parent
PRELOAD = "/opt/e2e-loads/loads.js"
OUT = "/opt/e2e-loads/out"
APP = PurePosixPath("/app")

# For each miss, the file a fresh resolution from the same place finds in the untraced tree, or null.
_RESOLVE = r"""
const { createRequire } = require('module');
const out = JSON.parse(require('fs').readFileSync(0, 'utf8')).map(({ req, from, paths }) => {
  try { return createRequire(from).resolve(req, paths ? { paths } : undefined); } catch { return null; }
});
process.stdout.write(JSON.stringify(out));
"""


@dataclass(frozen=True)
class Recorder:
    """Where a stack's records go on this machine."""

    out: Path

    def prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.out.chmod(0o1777)  # the containers run as their pods' uids

    @property
    def binds(self) -> tuple[tuple[Path, str], ...]:
        return ((HERE / "loads.js", PRELOAD),)

    @property
    def writable(self) -> tuple[tuple[Path, str], ...]:
        return ((self.out, OUT),)

    def env(self, env: dict[str, str], pod: str, container: str) -> dict[str, str]:
        """The container's environment with the recorder first in NODE_OPTIONS."""
        options = f"--require {PRELOAD} {env.get('NODE_OPTIONS', '')}".strip()
        return {**env, "NODE_OPTIONS": options, "E2E_LOADS_DIR": OUT, "E2E_LOADS_NAME": f"{pod}.{container}"}


@dataclass
class Records:
    processes: list[tuple[str, list[str]]] = field(default_factory=list)
    """(pod.container, argv) per process."""
    loads: dict[str, set[str]] = field(default_factory=dict)
    """Loaded file -> the records' names (pod.container) that loaded it."""
    reads: set[str] = field(default_factory=set)
    """Files under /app that fs opened or read."""
    listens: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """pod.container -> (port, seconds after its process started) of each listening socket."""
    misses: list[dict[str, Any]] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)
    """File under /app not found -> the fs call that asked."""


def read(out: Path) -> Records:
    records = Records()
    misses: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("*.jsonl")):
        who = path.name.rsplit(".", 2)[0]
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a process killed mid-write
            kind = record.get("t")
            if kind == "start":
                records.processes.append((who, [str(a) for a in record.get("argv") or []]))
            elif kind == "load":
                records.loads.setdefault(str(record["f"]), set()).add(who)
            elif kind == "miss":
                key = json.dumps([record.get("req"), record.get("from"), record.get("paths")])
                misses.setdefault(key, {**record, "who": who})
            elif kind == "read":
                records.reads.add(str(record["f"]))
            elif kind == "listen":
                records.listens.setdefault(who, []).append((int(record["port"]), float(record["s"])))
            elif kind == "enoent":
                records.absent.setdefault(str(record["f"]), str(record.get("op")))
    records.misses = list(misses.values())
    return records


def _in_app(path: str, root: PurePosixPath = APP) -> str | None:
    p = PurePosixPath(path)
    return p.relative_to(root).as_posix() if p == root or root in p.parents else None


def _to_tree(path: str | None, tree: Path, root: PurePosixPath) -> str | None:
    rel = _in_app(path, root) if path else None
    return str(tree / rel) if rel is not None else path


def resolve_in(tree: Path, misses: list[dict[str, Any]], root: PurePosixPath = APP) -> list[str | None]:
    """Each miss resolved afresh from the same place in `tree` (the untraced /app)."""
    asks = [{"req": m["req"], "from": _to_tree(m.get("from"), tree, root) or str(tree / "package.json"),
             "paths": [_to_tree(p, tree, root) for p in m["paths"]] if m.get("paths") else None} for m in misses]
    if not asks:
        return []
    done = subprocess.run(["node", "-e", _RESOLVE], input=json.dumps(asks), capture_output=True, text=True,
                          check=True, timeout=120)
    found: list[str | None] = json.loads(done.stdout)
    return found


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str
    never_loaded: list[tuple[str, int]]
    """Traced packages (or top-level directories) no process loaded a file of, with their bytes."""


def _package(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] != "node_modules":
        return parts[0]
    at = max(i for i, p in enumerate(parts) if p == "node_modules")
    return "/".join(parts[at + 1: at + (3 if parts[at + 1].startswith("@") else 2)])


def judge(records: Records, traced: set[str], untraced: Path, app: Path, allowed_outside: tuple[str, ...],
          root: PurePosixPath = APP) -> Verdict:
    """The line's verdict for a run whose processes ran on `app`, mounted at `root`; `traced` relative to it."""
    problems: list[str] = []
    if not records.processes:
        problems.append("no process of the bundler image wrote a record")
    loaded = {rel for f in [*records.loads, *records.reads] if (rel := _in_app(f, root)) is not None}
    outside = sorted(f for f in records.loads if _in_app(f, root) is None)
    not_traced = sorted(loaded - traced)
    if not_traced:
        problems.append(f"{len(not_traced)} loaded files are not in the traced set: {not_traced[:5]}")
    stray = [f for f in outside if not f.startswith(allowed_outside)]
    if stray:
        problems.append(f"loaded from outside /app: {stray[:5]}")
    found = resolve_in(untraced, records.misses, root)
    lost = [f"{m['req']} (asked from {m.get('from')}) is {hit}"
            for m, hit in zip(records.misses, found, strict=True) if hit]
    if lost:
        problems.append(f"{len(lost)} failed requires resolve in the untraced tree: {lost[:3]}")
    absent_lost = [f for f in records.absent if (rel := _in_app(f, root)) and (untraced / rel).exists()]
    if absent_lost:
        problems.append(f"{len(absent_lost)} files looked for under /app exist in the untraced tree: "
                        f"{[(f, records.absent[f]) for f in absent_lost[:3]]}")
    gone = [rel for rel in loaded if not (app / rel).exists()]
    if gone:
        problems.append(f"loaded files absent from the tree the pods run: {gone[:3]}")
    containers = Counter(who.rsplit(".", 1)[-1] for who, _ in records.processes)
    roots = Counter(next((a for a in allowed_outside if f.startswith(a)), "elsewhere") for f in outside)
    asked = Counter(str(m["req"]) for m in records.misses)
    facts = [
        f"{len(records.processes)} processes ({', '.join(f'{c} x{n}' for c, n in sorted(containers.items()))}) "
        f"loaded or read {len(loaded)} of the {len(traced)} traced files",
        f"outside /app {dict(roots) or 'nothing'}",
        f"{len(records.misses)} failed requires ({', '.join(f'{r} x{n}' for r, n in asked.most_common(6)) or 'none'})"
        f"{', none resolving in the untraced tree' if not lost else ''}",
        f"{len(records.absent)} files under /app looked for and absent"
        f"{', none in the untraced tree' if not absent_lost else ''}",
    ]
    return Verdict(not problems, "; ".join([*problems, *facts]), _never_loaded(traced, loaded, app))


def _never_loaded(traced: set[str], loaded: set[str], app: Path) -> list[tuple[str, int]]:
    """Traced packages of which no file was loaded, largest first: what only the static trace vouches for."""
    used = {_package(rel) for rel in loaded}
    sizes: Counter[str] = Counter()
    for rel in traced - loaded:
        # .bin holds links, whose targets are what loads.
        if _package(rel) not in used and not rel.startswith("node_modules/.bin/"):
            path = app / rel
            sizes[_package(rel)] += path.lstat().st_size if path.exists() else 0
    return sizes.most_common()
