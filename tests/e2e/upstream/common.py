"""What every step of the upstream build shares: paths, the error type, running logged commands."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[3]
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_ROOT = ROOT / "build" / "upstream"
CLI = "python -m tests.e2e.upstream"


class UpstreamError(Exception):
    """No image tree can be prepared; the message says why and what to change."""


Say = Callable[[str], None]


def stderr_say(message: str) -> None:
    print(f"upstream: {message}", file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    pass


def rel(path: Path) -> str:
    """`path` relative to the repository when it is inside it (shorter messages), else absolute."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def run_logged(
    cmd: list[str], cwd: Path, log: Path, say: Say, env: Optional[dict[str, str]] = None
) -> tuple[int, float]:
    say(f"$ {shlex.join(cmd)}  (in {rel(cwd)}, log {log.name})")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        try:
            rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except FileNotFoundError as exc:
            raise UpstreamError(f"`{cmd[0]}` is not installed: {exc}") from exc
    return rc, time.monotonic() - started


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def version_of(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        return ""


def rmtree(path: Path) -> None:
    """Remove a tree, even one with read-only directories (copied from a read-only source)."""

    def onerror(func: Callable[..., Any], name: str, exc_info: Any) -> None:
        parent = Path(name).parent
        try:
            parent.chmod(parent.stat().st_mode | 0o700)
            func(name)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)


def node_env() -> dict[str, str]:
    """The environment for yarn and node: nothing that would make them skip dev dependencies."""
    dropped = ("NODE_ENV", "NODE_OPTIONS", "YARN_PRODUCTION", "npm_config_production", "npm_config_omit")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(npm_config_update_notifier="false")
    return env
