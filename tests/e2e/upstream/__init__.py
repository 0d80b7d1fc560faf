"""The bundler image's `/app` tree, as the Dockerfile the program builds lays it out, without Docker.

    python -m tests.e2e.upstream [--stack dev] [--print-dir] [--relock]

For the runtime test that runs the real bundler on this machine, from the commit the dev stack
builds (`x402-bundler:imageGitRef` in Pulumi.dev.yaml) and the Dockerfile the stack's docker-build
Image is given (`spec.py`: image/Dockerfile inline, or the context's own), so it runs what
`pulumi up` would put in the image:

* Source (`source.py`): `$X402_UPSTREAM_SRC`, else a clone of `imageContext` at `imageGitRef`.
  Its files are hashed as a git tree and compared with that commit's tree.
* The stages before the runtime stage (`build.py`), step by step: `yarn install --frozen-lockfile`
  runs for real with the image's yarn, on the committed `yarn.lock` beside this file: the
  upstream's, but for three versions the registry reached here lacks (`dependencies.py`);
  `yarn build` runs on the source adapted to those substitutes, tsc's errors are kept; the
  tracer (image/tracer) runs for real on the builder's tree.
* Runtime stage (`layout.py`): every COPY, the user and group ids, ENTRYPOINT, CMD, ...

The tree lands in `build/upstream/<key>/app` with `image.json`, the stages' trees and the build
logs; `<key>` hashes everything that shapes it (the build context, the Dockerfile and named
contexts, this package's sources and lock, the commit, node and yarn), so an unchanged input
reuses a complete tree. `build_report()` says whether the source is the commit, the installed
dependencies the upstream yarn.lock's, and tsc's errors tolerated.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tests.e2e.upstream import dependencies
from tests.e2e.upstream.build import ADAPTATIONS, TscError, classify
from tests.e2e.upstream.common import (
    BUILD_ROOT,
    PACKAGE_DIR,
    Say,
    UpstreamError,
    rel,
    rmtree,
    stderr_say,
    version_of,
)
from tests.e2e.upstream.context import Context
from tests.e2e.upstream.layout import REQUIRED_FILES
from tests.e2e.upstream.source import TreeProof, locate_source
from tests.e2e.upstream.spec import BuildSpec
from tests.e2e.upstream.stages import build_image

__all__ = ["BuildSpec", "Prepared", "UpstreamError", "build_report", "describe", "prepare", "prune"]

MARKER = "COMPLETE"
IMAGE_JSON = "image.json"
KEY_LEN = 16
KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_LEN}}}$")


@dataclass(frozen=True)
class Prepared:
    """A prepared image tree: `app_dir` is what the image holds at `workdir`."""

    app_dir: Path
    root: Path
    """`build/upstream/<key>`: holds `app/`, `image.json`, `stages/` and the build logs."""
    full_app: Path
    """The tree the tracer read (the builder's /app with what the processes read from the context);
    for a layout that is not traced, `app_dir` itself."""
    spec: str
    """Which Dockerfile laid it out (BuildSpec.label)."""
    trace: Optional[dict[str, Any]]
    """The tracer's report (image/tracer/trace.mjs), when the Dockerfile traces."""
    figures: dict[str, int]
    """`/app` as an image layer holds it: apparent and on-disk bytes, files, gzip-compressed bytes."""
    source: Path
    """Where this run took the source from (a reused tree may have been built from another copy
    with the same build context)."""
    key: str
    commit: str
    """The commit the stack builds; `proof` says whether the source's files are it."""
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    user: str
    uid: int
    gid: int
    """The group that owns the tree (`COPY --chown=user:group`, from the `addgroup -g` line)."""
    process_gid: int
    """The primary group a process started as `USER` gets (busybox `adduser -S` without `-G`: nogroup)."""
    exposed_ports: list[int]
    env: dict[str, str]
    stop_signal: Optional[str]
    system_packages: list[str]
    """Packages the runtime stage `apk add`s (e.g. dumb-init, the ENTRYPOINT): not in the tree."""
    copied: list[str]
    """Paths the COPY lines created, relative to `app_dir`."""
    chowned: bool
    reused: bool
    proof: TreeProof
    """This run's source, hashed, against the commit's tree."""
    dependency_differences: dict[str, dict[str, list[str]]]
    """name -> {"lock": versions upstream's yarn.lock resolves, "installed": versions installed}."""
    optional_only: dict[str, list[str]]
    """Differing names that upstream's lock has only as optional dependencies (of these)."""
    tsc_exit: int
    tsc_version: str
    tsc_errors: list[TscError]


def build_report(prepared: Prepared) -> list[tuple[str, bool, str]]:
    """(scenario, ok, detail) for the source, the dependencies and the TypeScript build."""
    proof = prepared.proof
    tree = ("upstream source is the commit the stack builds", proof.ok, f"{prepared.source}: {proof.detail()}")

    diffs = prepared.dependency_differences
    allowed, bad = dependencies.judge(diffs, prepared.optional_only)
    substituted = len({s.package for s in dependencies.SUBSTITUTIONS} & set(diffs))
    optional = len(set(prepared.optional_only) & {name for name, _ in allowed})
    detail = (f"upstream dependencies: {len(diffs)} differ from yarn.lock: {', '.join(diffs) or 'none'}; "
              f"{len(allowed)} allowed ({substituted} substituted as the registry lacks the version, "
              f"{len(allowed) - substituted - optional} required or dropped by the substitutes, "
              f"{optional} optional for other platforms)")
    if bad:
        detail += f"; not allowed: {'; '.join(bad)}"
    deps = ("upstream dependencies are yarn.lock's", not bad, detail)

    matched, untolerated, unseen = classify(prepared.tsc_errors)
    per_file: dict[str, int] = {}
    for error, _ in matched:
        per_file[error.file] = per_file.get(error.file, 0) + 1
    detail = (f"tsc {prepared.tsc_version} exit {prepared.tsc_exit}: {len(prepared.tsc_errors)} errors, "
              f"{len(matched)} tolerated ({', '.join(f'{f} x{n}' for f, n in per_file.items()) or 'none'}), "
              f"{len(untolerated)} not tolerated; source adapted at {sum(a.count for a in ADAPTATIONS)} places")
    if untolerated:
        detail += f": {'; '.join(map(str, untolerated))}"
    if unseen:
        detail += "; tolerated but not seen: " + ", ".join(f"{t.file} {t.code} x{t.count - n}" for t, n in unseen)
    return [tree, deps, ("TypeScript compiles as the image's yarn build", not untolerated, detail)]


def cache_key(context: Context, commit: str, spec: BuildSpec) -> tuple[str, int]:
    """Over everything that shapes the tree; (key, number of context files)."""
    digest = hashlib.sha256()
    digest.update(f"commit {commit}\0node {version_of(['node', '--version'])}\0".encode())
    digest.update(f"yarn {version_of([str(dependencies.YARN), '--version'])}\0".encode())
    for path in sorted([*PACKAGE_DIR.glob("*.py"), dependencies.LOCK_FILE]):
        digest.update(f"{path.name}\0".encode() + (path.read_bytes() if path.is_file() else b"(none)") + b"\0")
    spec.digest(digest)
    files = context.digest(digest)
    return digest.hexdigest()[:KEY_LEN], files


@contextmanager
def _build_lock(say: Say) -> Iterator[None]:
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with (BUILD_ROOT / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another build of the upstream tree to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepared(root: Path, reused: bool, source: Path, proof: TreeProof) -> Prepared:
    data = json.loads((root / IMAGE_JSON).read_text())
    deps = data.get("dependencies") or {}
    tsc = data.get("tsc") or {}
    return Prepared(
        app_dir=root / "app", root=root, full_app=root / data.get("full_app", "app"), spec=data.get("spec", ""),
        trace=(data.get("trace") or {}).get("report"), figures=dict(data.get("figures") or {}),
        source=source, key=data["key"], commit=data["commit"],
        entrypoint=list(data["entrypoint"]), cmd=list(data["cmd"]), workdir=data["workdir"], user=data["user"],
        uid=int(data["uid"]), gid=int(data["gid"]), process_gid=int(data["process_gid"]),
        exposed_ports=[int(p) for p in data["exposed_ports"]], env=dict(data["env"]),
        stop_signal=data.get("stop_signal"), system_packages=list(data["system_packages"]),
        copied=[p for c in data["copied"] for p in c["paths"]], chowned=bool(data["chowned"]), reused=reused,
        proof=proof, dependency_differences=deps.get("differences", {}), optional_only=deps.get("optional_only", {}),
        tsc_exit=int(tsc.get("exit", 0)), tsc_version=tsc.get("version", ""),
        tsc_errors=[TscError(**e) for e in tsc.get("errors", [])],
    )


def prepare(spec: BuildSpec, *, relock_lock: bool = False, say: Optional[Say] = None) -> Prepared:
    """Build (or reuse) the image tree `spec` lays out, of the commit Pulumi.dev.yaml builds. Raises
    UpstreamError only when no tree can be built; a source or dependency mismatch is for `build_report`."""
    say = say or stderr_say
    source = locate_source(say)
    with _build_lock(say):
        for stale in BUILD_ROOT.glob(".tmp-*"):
            rmtree(stale)
        if relock_lock:
            dependencies.relock(source.path, BUILD_ROOT, say)
        context = Context.of(source.path)
        started = time.monotonic()
        key, files = cache_key(context, source.commit, spec)
        root = BUILD_ROOT / key
        say(f"key {key} ({files} context files, {spec.label}, this package and its yarn.lock; hashed in "
            f"{time.monotonic() - started:.1f}s)")
        if ((root / MARKER).is_file() and (root / IMAGE_JSON).is_file()
                and all((root / "app" / f).is_file() for f in REQUIRED_FILES)):
            say(f"reusing {rel(root)}: complete since {(root / MARKER).read_text().strip()}; nothing to do")
            return _prepared(root, True, source.path, source.proof)
        if root.exists():
            say(f"{rel(root)} exists but is not complete: removing it")
            rmtree(root)
        tmp = BUILD_ROOT / f".tmp-{key}-{os.getpid()}"
        try:
            tmp.mkdir(parents=True)
            image = build_image(context, spec, source.commit, key, tmp, say)
            (tmp / IMAGE_JSON).write_text(json.dumps(image, indent=2) + "\n")
            (tmp / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
            tmp.rename(root)
        except BaseException:
            if (tmp / "logs").is_dir():
                kept = BUILD_ROOT / "last-failed-logs"
                rmtree(kept)
                shutil.copytree(tmp / "logs", kept)
                say(f"build failed; its logs are kept in {rel(kept)}")
            rmtree(tmp)
            raise
        rmtree(BUILD_ROOT / "last-failed-logs")
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in image["timings"].items())
        say(f"built {rel(root)}: {describe(image['figures'])}; {timings}")
        return _prepared(root, False, source.path, source.proof)


def describe(figures: dict[str, int]) -> str:
    mib = 2**20
    return (f"/app {figures['apparent'] / mib:.1f} MiB apparent, {figures['disk'] / mib:.1f} MiB on disk, "
            f"{figures['files']} files, {figures['compressed'] / mib:.1f} MiB as a gzip layer")


def prune(keep: set[Path], say: Say) -> None:
    """Remove the trees of earlier builds (each holds about 1.5 GB), keeping those in `keep`."""
    with _build_lock(say):
        for old in BUILD_ROOT.iterdir():
            if old not in keep and old.is_dir() and KEY_RE.match(old.name):
                say(f"removing the older tree {rel(old)}")
                rmtree(old)
