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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from tests.e2e.upstream import dependencies
from tests.e2e.upstream.build import ADAPTATIONS, TOLERATED_ERRORS, Builder, TscError, classify
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
from tests.e2e.upstream.dockerfile import DOCKERFILE, Stage, copies, parse_dockerfile
from tests.e2e.upstream.figures import measure
from tests.e2e.upstream.layout import REQUIRED_FILES, lay_out, verify
from tests.e2e.upstream.source import TreeProof, locate_source
from tests.e2e.upstream.spec import BuildSpec

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


def _needed(final: Stage, stages: list[Stage]) -> list[Stage]:
    """The stages the runtime stage depends on (COPY --from, FROM), in Dockerfile order."""
    by_name = {s.name: s for s in stages if s.name} | {str(s.index): s for s in stages}
    wanted: set[int] = set()
    pending = [final]
    while pending:
        stage = pending.pop()
        for ref in [stage.base, *(c.from_stage for c in copies(stage) if c.from_stage)]:
            found = by_name.get(ref)
            if found is not None and found.index not in wanted:
                wanted.add(found.index)
                pending.append(found)
    return [s for s in stages if s.index in wanted]


def _build(context: Context, spec: BuildSpec, commit: str, key: str, tmp: Path, say: Say) -> dict[str, Any]:
    started = time.monotonic()
    text = spec.dockerfile if spec.dockerfile is not None else (context.root / DOCKERFILE).read_text()
    stages = parse_dockerfile(text)
    final = stages[-1]
    named = spec.contexts()
    roots: dict[str, Path] = {}
    workdirs: dict[str, str] = {}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    logs = tmp / "logs"
    needed = _needed(final, stages)
    for stage in needed:
        keys = [k for k in (stage.name, str(stage.index)) if k]
        parent = next((s for s in needed if stage.base in (s.name, str(s.index))), None)
        if parent is not None:
            # `FROM <stage>` goes on in that stage's tree, which no later step may then read as it was.
            later = [s for s in needed if s.index > stage.index]
            if any(parent.name in {c.from_stage for c in copies(s)} or s.base == parent.name for s in [*later, final]):
                raise UpstreamError(f"stage {keys[0]} goes on from {parent.name}, which a later stage also reads: "
                                    "not emulated")
            root, workdir = roots[parent.name or str(parent.index)], workdirs[parent.name or str(parent.index)]
        else:
            root, workdir = tmp / "stages" / keys[0], "/"
        say(f"{keys[0]} stage: `FROM {stage.base}{' AS ' + stage.name if stage.name else ''}` "
            f"({len(stage.instructions)} instructions)")
        builder = Builder(context, root, logs, say, named=named, stages=dict(roots), workdir=workdir)
        workdir = builder.run(stage)
        if "trace" in builder.results and "trace" not in results:
            traced = root / Path(builder.results["trace"]["app"]).relative_to("/")
            results["full_app"] = traced.relative_to(tmp).as_posix()
        results.update(builder.results)
        timings.update(builder.timings)
        for k in keys:
            roots[k], workdirs[k] = root, workdir
    layout_started = time.monotonic()
    image = lay_out(final, context, named, roots, tmp / "app", say)
    verify(tmp / "app")
    timings["layout"] = time.monotonic() - layout_started
    measuring = time.monotonic()
    results["figures"] = measure(tmp / "app")
    timings["measure"] = time.monotonic() - measuring
    timings["total"] = time.monotonic() - started
    return {
        "commit": commit, "key": key, "source": str(context.root), "spec": spec.label, **image, **results,
        "substitutions": [asdict(s) for s in dependencies.SUBSTITUTIONS],
        "adaptations": [asdict(a) for a in ADAPTATIONS],
        "tolerated_errors": [asdict(t) for t in TOLERATED_ERRORS],
        "lock_sha256": hashlib.sha256(dependencies.LOCK_FILE.read_bytes()).hexdigest(),
        "node": version_of(["node", "--version"]),
        "yarn": dependencies.IMAGE_YARN_VERSION,
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


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
            image = _build(context, spec, source.commit, key, tmp, say)
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
