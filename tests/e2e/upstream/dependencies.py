"""The upstream's dependencies: its yarn.lock, the versions substituted because the registry
reached here lacks them, the committed lock that pins the result, and what the installed tree
holds compared with the upstream's own lock."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.upstream.common import (
    CLI,
    PACKAGE_DIR,
    ROOT,
    Say,
    UpstreamError,
    node_env,
    rel,
    run_logged,
    tail,
    version_of,
)
from tests.e2e.upstream.yarnlock import LockEntry, by_pattern, closure, name_of, parse_lock, without_patterns

LOCK_FILE = PACKAGE_DIR / "yarn.lock"
"""The upstream's yarn.lock with the substitutions resolved (`--relock` writes it)."""
YARN = ROOT / "node_modules" / "yarn" / "bin" / "yarn"
IMAGE_YARN_VERSION = "1.22.22"  # the yarn node:20-alpine ships, which runs the image's `yarn install`
DEPENDENCY_SECTIONS = ("dependencies", "devDependencies", "optionalDependencies")


@dataclass(frozen=True)
class Substitution:
    package: str
    upstream: str
    """The spec the upstream package.json asks for (checked, so a change upstream is noticed)."""
    here: str
    """The version the registry reached here has, pinned in the patched package.json."""
    why: str


SUBSTITUTIONS = (
    Substitution("@alexsasharegan/simple-cache", "^1.2.1", "3.3.3",
                 "the registry has no 1.3.0, the version yarn.lock pins (only 3.3.3)"),
    Substitution("@ardrive/ardrive-promise-cache", "1.2.0-alpha.6", "1.4.0",
                 "the registry has no 1.2.0-alpha.6, the version yarn.lock pins (1.1.4 and 1.4.0 around it)"),
    Substitution("@bull-board/koa", "^6.13.1", "6.14.2",
                 "the registry has no 6.14.0, the version yarn.lock pins (6.13.0, then 6.14.2)"),
)


@dataclass(frozen=True)
class Allowed:
    """A name whose installed versions may differ from the upstream lock's, by exactly this much."""

    name: str
    added: tuple[str, ...]
    """Installed, not in the upstream lock."""
    removed: tuple[str, ...]
    """In the upstream lock, not installed."""
    why: str


_KOA = "@bull-board/koa 6.14.2 (the substitute)"
# Measured on a real install; any other difference makes the report's dependency line FAIL.
ALLOWED_DIFFERENCES = (
    Allowed("@alexsasharegan/simple-cache", (), ("1.3.0",), SUBSTITUTIONS[0].why + "; 3.3.3 was there already"),
    Allowed("@ardrive/ardrive-promise-cache", ("1.4.0",), ("1.2.0-alpha.6",), SUBSTITUTIONS[1].why),
    Allowed("@bull-board/koa", ("6.14.2",), ("6.14.0",), SUBSTITUTIONS[2].why),
    Allowed("@bull-board/api", ("6.14.2",), (), f"{_KOA} requires 6.14.2 (the app's own ^6.13.1 stays 6.14.0)"),
    Allowed("@bull-board/ui", ("6.14.2",), ("6.14.0",), f"{_KOA} requires 6.14.2"),
    Allowed("@koa/bodyparser", ("6.1.0",), ("5.1.2",), f"{_KOA} requires ^6.0.0 (6.14.0 required ^5.1.2)"),
    Allowed("koa", ("3.3.0",), (), f"{_KOA} requires ^3.0.3, nested under it (the app's own koa is unchanged)"),
    Allowed("content-disposition", ("1.0.1",), (), f"koa 3.3.0, which {_KOA} requires, requires ~1.0.1"),
    Allowed("prom-client", (), ("14.2.0",),
            "only ardrive-promise-cache 1.2.0-alpha.6 required 14.2.0; the substitute 1.4.0 does not use prom-client "
            "(the app's own prom-client is unchanged)"),
)


def _root_patterns(package: Mapping[str, Any]) -> dict[str, str]:
    """name -> `name@spec` for the package.json's own dependencies."""
    return {n: f"{n}@{s}" for sec in DEPENDENCY_SECTIONS for n, s in (package.get(sec) or {}).items()}


def foreign_differences(upstream: str, ours: str, package: Mapping[str, Any],
                        substitutions: tuple[Substitution, ...] = SUBSTITUTIONS) -> list[str]:
    """Patterns whose resolution differs between the upstream lock and ours and that do not belong
    to the substitutions: reached, in the lock that has them, only through a substituted package.
    `package` is the upstream's package.json (before substituting)."""
    up, here = by_pattern(parse_lock(upstream)), by_pattern(parse_lock(ours))
    substituted = {s.package for s in substitutions}
    others = [p for n, p in _root_patterns(package).items() if n not in substituted]

    def owned(lock: Mapping[str, LockEntry], specs: Iterable[str]) -> set[str]:
        return closure(lock, specs) - closure(lock, others)

    owned_up = owned(up, [f"{s.package}@{s.upstream}" for s in substitutions])
    owned_here = owned(here, [f"{s.package}@{s.here}" for s in substitutions])

    def same(pattern: str) -> bool:
        a, b = up.get(pattern), here.get(pattern)
        return a is not None and b is not None and (a.fields, a.dependencies, a.optional) == (
            b.fields, b.dependencies, b.optional)

    def belongs(pattern: str) -> bool:
        return (pattern not in up or pattern in owned_up) and (pattern not in here or pattern in owned_here)

    return sorted(p for p in set(up) | set(here) if not same(p) and not belongs(p))


def patched_package_json(upstream: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(upstream))
    deps = data.get("dependencies") or {}
    for sub in SUBSTITUTIONS:
        asked = deps.get(sub.package)
        if asked != sub.upstream:
            raise UpstreamError(
                f"the upstream package.json asks for {sub.package} {asked!r}, not {sub.upstream!r} as "
                f"SUBSTITUTIONS in tests/e2e/upstream/dependencies.py expects: review it (and the source "
                f"adaptations in build.py), then run `{CLI} --relock`"
            )
        deps[sub.package] = sub.here
    return data


def check_lock(upstream_lock: str, package: Mapping[str, Any]) -> str:
    """The committed lock's text, once it is shown to be the upstream's but for the substitutions."""
    if not LOCK_FILE.is_file():
        raise UpstreamError(f"{rel(LOCK_FILE)} does not exist: run `{CLI} --relock`, review it and commit it")
    ours = LOCK_FILE.read_text()
    foreign = foreign_differences(upstream_lock, ours, package)
    if foreign:
        raise UpstreamError(
            f"{rel(LOCK_FILE)} differs from the upstream yarn.lock in {len(foreign)} entries that are not the "
            f"substitutions': {', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}. Run `{CLI} --relock`, "
            f"review the diff and commit it"
        )
    return ours


def check_yarn() -> Path:
    """The project's yarn (`make test-deps`), which must be the image's version."""
    version = version_of([str(YARN), "--version"]) if YARN.is_file() else ""
    if version != IMAGE_YARN_VERSION:
        raise UpstreamError(
            f"{rel(YARN)} is yarn {version or '(missing)'}, not {IMAGE_YARN_VERSION} as the image has: "
            f"run `make test-deps`"
        )
    return YARN


def relock(src: Path, logs: Path, say: Say) -> None:
    """Write the committed lock anew: the upstream's, with the substituted entries resolved by yarn
    (not frozen: yarn keeps every other entry and resolves only the missing ones)."""
    yarn = check_yarn()
    package = patched_package_json(json.loads((src / "package.json").read_text()))
    with tempfile.TemporaryDirectory(prefix="upstream-relock-") as tmp:
        work = Path(tmp)
        (work / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        drop = {f"{s.package}@{s.upstream}" for s in SUBSTITUTIONS}
        (work / "yarn.lock").write_text(without_patterns((src / "yarn.lock").read_text(), drop))
        log = logs / "relock.log"
        cmd = [str(yarn), "install", "--ignore-scripts", "--non-interactive", "--no-progress"]
        rc, seconds = run_logged(cmd, work, log, say, node_env())
        if rc != 0:
            raise UpstreamError(f"`yarn install` (relock) failed (exit {rc}; log {log}):\n{tail(log)}")
        text = (work / "yarn.lock").read_text()
    changed = not LOCK_FILE.is_file() or LOCK_FILE.read_text() != text
    LOCK_FILE.write_text(text)
    say(f"relock: resolved in {seconds:.1f}s; {rel(LOCK_FILE)} {'written' if changed else 'unchanged'}")
    check_lock((src / "yarn.lock").read_text(), json.loads((src / "package.json").read_text()))


# ---------------------------------------------------------------- the installed tree


def installed_packages(node_modules: Path) -> dict[str, set[str]]:
    """name -> versions of every package installed under `node_modules` (nested ones too). The name
    is the directory's, as the lock names it (an npm: alias is installed under its alias)."""
    found: dict[str, set[str]] = {}
    todo = [node_modules]
    while todo:
        here = todo.pop()
        if not here.is_dir():
            continue
        for child in sorted(here.iterdir()):
            if child.name.startswith("."):
                continue
            packages = sorted(child.iterdir()) if child.name.startswith("@") and child.is_dir() else [child]
            for package in packages:
                manifest = package / "package.json"
                if package.is_symlink() or not manifest.is_file():
                    continue
                version = json.loads(manifest.read_text()).get("version", "")
                found.setdefault(package.relative_to(here).as_posix(), set()).add(version)
                todo.append(package / "node_modules")
    return found


def lock_versions(entries: Iterable[LockEntry]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for entry in entries:
        for pattern in entry.patterns:
            out.setdefault(name_of(pattern), set()).add(entry.version)
    return out


def differences(locked: Mapping[str, set[str]], installed: Mapping[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Names whose installed versions are not the set the lock resolves (either way round)."""
    return {
        name: {"lock": sorted(locked.get(name, set())), "installed": sorted(installed.get(name, set()))}
        for name in sorted(set(locked) | set(installed))
        if locked.get(name, set()) != installed.get(name, set())
    }


def optional_only(entries: list[LockEntry], package: Mapping[str, Any],
                  differences: Mapping[str, Mapping[str, list[str]]]) -> dict[str, list[str]]:
    """Differing names that are not installed at all and that the upstream lock reaches only as
    someone's optionalDependencies: name -> those requirers (`name@version`). yarn skips such a
    package when its os/cpu is not this machine's, as the image's yarn does for its own platform."""
    requested: dict[str, set[tuple[str, bool]]] = {}
    for entry in entries:
        requirer = f"{name_of(entry.patterns[0])}@{entry.version}"
        for dep, _ in entry.dependencies:
            requested.setdefault(dep, set()).add((requirer, False))
        for dep, _ in entry.optional:
            requested.setdefault(dep, set()).add((requirer, True))
    roots = set(_root_patterns(package))
    return {
        name: sorted(r for r, _ in requested[name])
        for name, d in differences.items()
        if not d["installed"] and name not in roots and requested.get(name)
        and all(optional for _, optional in requested[name])
    }


def judge(differences: Mapping[str, Mapping[str, list[str]]], optional: Mapping[str, list[str]],
          allowed: tuple[Allowed, ...] = ALLOWED_DIFFERENCES) -> tuple[list[tuple[str, str]], list[str]]:
    """(allowed differences with their reason, differences that are not allowed, described)."""
    by_name = {a.name: a for a in allowed}
    ok: list[tuple[str, str]] = []
    bad: list[str] = []
    for name, d in differences.items():
        lock, here = set(d["lock"]), set(d["installed"])
        added, removed = tuple(sorted(here - lock)), tuple(sorted(lock - here))
        entry = by_name.get(name)
        if entry is not None and (added, removed) == (tuple(sorted(entry.added)), tuple(sorted(entry.removed))):
            ok.append((name, entry.why))
        elif name in optional:
            ok.append((name, f"optional dependency of {', '.join(optional[name])} only; yarn skips it on this "
                             f"platform, as the image's yarn skips those not for its own"))
        else:
            bad.append(f"{name} (lock {', '.join(d['lock']) or '-'}; installed {', '.join(d['installed']) or '-'})")
    return ok, bad


def locked_version(name: str) -> str:
    """The one version the committed lock resolves `name` to (client.js installs these)."""
    versions = lock_versions(parse_lock(LOCK_FILE.read_text())).get(name, set())
    if len(versions) != 1:
        raise UpstreamError(f"{rel(LOCK_FILE)} resolves {name} to {sorted(versions) or 'nothing'}, not one version")
    return next(iter(versions))
