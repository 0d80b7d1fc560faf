"""The runtime stage: the `/app` tree its COPY lines lay out (from the build context through
`.dockerignore`, or `--from=` the builder), owned as its `--chown` says, and the image's
configuration (WORKDIR, USER and its ids, ENTRYPOINT, CMD, EXPOSE, ENV, STOPSIGNAL)."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from tests.e2e.upstream.common import Say, UpstreamError
from tests.e2e.upstream.context import Context
from tests.e2e.upstream.dockerfile import (
    WHO,
    Accounts,
    CopyInstruction,
    Stage,
    exec_form,
    parse_copy,
    parse_env,
    resolve_in,
    shell_commands,
)

REQUIRED_FILES = ("lib/index.js", "lib/jobs/allWorkers.js", "lib/arch/db/knexfile.js", "admin-server.js")
Place = Callable[[str, Path], None]


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file the build itself produced (same file system, no second copy), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _lchown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)


def _copy(copy: CopyInstruction, sources: list[tuple[str, bool]], root: Path, workdir: str,
          owner: Optional[tuple[int, int]], place: Place, top: Optional[str] = None) -> list[str]:
    """Docker's COPY destination rules for `sources` (path, is a directory), relative to the stage's
    `workdir`; returns the created paths relative to `root`, which stands for the image path `top`
    (a stage's `/`, or the runtime stage's WORKDIR)."""
    top = top or workdir
    dest_abs = resolve_in(workdir, copy.dest)
    try:
        dest = root / dest_abs.relative_to(top)
    except ValueError as exc:
        raise UpstreamError(
            f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: copies outside {top}"
        ) from exc
    if len(sources) > 1 and not copy.dest.endswith("/"):
        raise UpstreamError(
            f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: several sources need a destination "
            f"ending in /"
        )
    into_dir = copy.dest.endswith("/") or len(sources) > 1 or (dest.is_dir() and not dest.is_symlink())
    created = []
    for rel, is_dir in sources:
        target = dest / PurePosixPath(rel).name if into_dir and not is_dir else dest
        place(rel, target)
        created.append(target)
    if owner is not None and os.geteuid() == 0:
        for target in created:
            _lchown_tree(target, *owner)
    return [t.relative_to(root).as_posix() or "." for t in created]


def copy_from_context(copy: CopyInstruction, context: Context, root: Path, workdir: str,
                      owner: Optional[tuple[int, int]], top: Optional[str] = None) -> list[str]:
    """COPY from the build context. Modes are those of a git checkout (what buildx gets from the
    Git URL the stack builds): files 0644, or 0755 when executable; directories 0755."""

    def copy_file(src: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        target.chmod(0o755 if src.stat().st_mode & 0o111 else 0o644)

    def place(rel: str, dest: Path) -> None:
        src = context.root / rel
        if not src.is_dir() or src.is_symlink():
            copy_file(src, dest)
            return
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        base = Path(rel) if rel != "." else Path("")
        for sub, path in context.walk("" if rel == "." else rel):
            target = dest / Path(sub).relative_to(base)
            if path.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(os.readlink(path))
            elif path.is_dir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
            else:
                copy_file(path, target)

    sources = [(r, (context.root / r).is_dir() and not (context.root / r).is_symlink()) for r in context.sources(copy)]
    return _copy(copy, sources, root, workdir, owner, place, top)


def copy_from_stage(copy: CopyInstruction, stage_root: Path, root: Path, workdir: str,
                    owner: Optional[tuple[int, int]], top: Optional[str] = None) -> list[str]:
    """COPY --from=<stage>: its sources are paths from that stage's `/` (`stage_root`)."""
    sources = []
    for pattern in copy.sources:
        rel = resolve_in("/", pattern).relative_to("/").as_posix()
        if not (stage_root / rel).exists():
            raise UpstreamError(
                f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: stage {copy.from_stage} produced "
                f"no {pattern}"
            )
        sources.append((rel, (stage_root / rel).is_dir() and not (stage_root / rel).is_symlink()))

    def place(rel: str, dest: Path) -> None:
        src = stage_root / rel
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dest, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(str(src), str(dest))

    return _copy(copy, sources, root, workdir, owner, place, top)


def copy_in(copy: CopyInstruction, context: Context, named: dict[str, Context], stages: dict[str, Path], root: Path,
            workdir: str, owner: Optional[tuple[int, int]], where: str, top: Optional[str] = None) -> list[str]:
    """A COPY from where its `--from` says: an earlier stage (`stages`: their roots), a named
    context, or the build context."""
    if copy.from_stage in stages:
        return copy_from_stage(copy, stages[copy.from_stage], root, workdir, owner, top)
    if copy.from_stage in named:
        return copy_from_context(copy, named[copy.from_stage], root, workdir, owner, top)
    if copy.from_stage:
        raise UpstreamError(f"{where}: `{copy.instruction}`: --from={copy.from_stage} is no earlier stage and no "
                            "named context")
    return copy_from_context(copy, context, root, workdir, owner, top)


def lay_out(stage: Stage, context: Context, named: dict[str, Context], stage_roots: dict[str, Path], app: Path,
            say: Say) -> dict[str, Any]:
    """The runtime stage into `app`, copying from the build context, the named contexts and the
    stages built before it (`stage_roots`, each standing for that stage's `/`); returns the
    image's configuration for image.json."""
    accounts = Accounts()
    workdir: Optional[str] = None
    workdir_owner = (0, 0)
    entrypoint: Optional[list[str]] = None
    cmd: Optional[list[str]] = None
    user = "root"
    ports: list[int] = []
    env: dict[str, str] = {}
    packages: list[str] = []
    copied: list[dict[str, Any]] = []
    healthcheck: Optional[str] = None
    stop_signal: Optional[str] = None
    chowned = os.geteuid() == 0
    for ins in stage.instructions:
        where = f"Dockerfile line {ins.line} (runtime stage)"
        if ins.keyword == "WORKDIR":
            workdir = str(resolve_in(workdir or "/", ins.args.strip()))
            app.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "RUN":
            for command in shell_commands(ins.args, where):
                if command[:2] == ["apk", "add"]:
                    packages += [c for c in command[2:] if not c.startswith("-")]
                elif command[0] == "addgroup":
                    accounts.addgroup(command[1:])
                elif command[0] == "adduser":
                    accounts.adduser(command[1:])
                elif (command[0] == "chown" and len(command) == 3 and workdir
                      and resolve_in(workdir, command[2]) == PurePosixPath(workdir)):
                    workdir_owner = accounts.owner(command[1])
                else:
                    raise UpstreamError(
                        f"{where}: `{shlex.join(command)}` is not emulated by {WHO}: the upstream Dockerfile changed"
                    )
        elif ins.keyword == "COPY":
            if workdir is None:
                raise UpstreamError(f"{where}: COPY before WORKDIR: the tree is laid out relative to the WORKDIR")
            copy = parse_copy(ins)
            owner = accounts.owner(copy.chown)
            paths = copy_in(copy, context, named, stage_roots, app, workdir, owner, where)
            copied.append({"instruction": str(ins), "from": copy.from_stage or "context", "paths": paths,
                           "owner": list(owner)})
        elif ins.keyword == "USER":
            user = ins.args.strip()
        elif ins.keyword == "EXPOSE":
            for port in ins.args.split():
                number = port.split("/")[0]
                if not number.isdigit():
                    raise UpstreamError(f"{where}: EXPOSE {port} is not emulated")
                ports.append(int(number))
        elif ins.keyword == "ENTRYPOINT":
            entrypoint = exec_form(ins)
            if cmd is None:
                cmd = []  # ENTRYPOINT resets an inherited CMD
        elif ins.keyword == "CMD":
            cmd = exec_form(ins)
        elif ins.keyword == "ENV":
            env.update(parse_env(ins))
        elif ins.keyword == "HEALTHCHECK":
            healthcheck = " ".join(ins.args.split())
        elif ins.keyword == "STOPSIGNAL":
            stop_signal = ins.args.strip()
        elif ins.keyword not in ("LABEL", "ARG"):
            raise UpstreamError(f"{where}: `{ins}`: {ins.keyword} in the runtime stage is not emulated by {WHO}")
    if workdir is None:
        raise UpstreamError("the Dockerfile's runtime stage sets no WORKDIR")
    if entrypoint is None or cmd is None:
        raise UpstreamError(
            "the Dockerfile's runtime stage sets no ENTRYPOINT (it would inherit the base image's, which is not read)"
        )
    name, _, group = user.partition(":")
    uid, process_gid = accounts.uid_of(name)
    if group:
        process_gid = accounts.gid_of(group)
    if chowned:
        os.lchown(app, *workdir_owner)
    else:
        say("not root: ownership is left as is (recorded as chowned: false in image.json)")
    return {
        "base_image": stage.base, "workdir": workdir, "user": user, "uid": uid, "gid": workdir_owner[1],
        "process_gid": process_gid, "entrypoint": entrypoint, "cmd": cmd, "exposed_ports": ports, "env": env,
        "healthcheck": healthcheck, "stop_signal": stop_signal, "system_packages": packages, "copied": copied,
        "chowned": chowned,
    }


def verify(app: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (app / f).is_file()]
    if missing:
        raise UpstreamError(f"the prepared tree lacks {', '.join(missing)}")
    typings = [p for p in (app / "lib").rglob("*") if p.name.endswith((".d.ts", ".d.ts.map"))]
    if typings:
        raise UpstreamError(f"the prepared tree still has {len(typings)} .d.ts files under lib/ (e.g. {typings[0]})")
