"""image/tracer on this machine, for a tree no Dockerfile step traced (imageDockerfile=upstream, and
the tracer's unit tests): installed from its own lock into build/tracer, reused while the lock is."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from components.image import TRACER_CONTEXT as SOURCE
from tests.e2e.upstream.common import ROOT, UpstreamError, node_env

INSTALLED = ROOT / "build" / "tracer"


def install() -> Path:
    """trace.mjs beside node_modules installed by `npm ci` from its package-lock.json."""
    lock = (SOURCE / "package-lock.json").read_text()
    INSTALLED.mkdir(parents=True, exist_ok=True)
    marker = INSTALLED / "installed-lock.json"
    if not marker.is_file() or marker.read_text() != lock:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, INSTALLED / name)
        done = subprocess.run(["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=INSTALLED, capture_output=True, text=True, timeout=600, env=node_env(), check=False)
        if done.returncode != 0:
            raise UpstreamError(f"npm ci of image/tracer failed: {done.stderr.strip()[-500:]}")
        marker.write_text(lock)
    shutil.copy(SOURCE / "trace.mjs", INSTALLED / "trace.mjs")
    return INSTALLED / "trace.mjs"


def traced_files(app: Path) -> set[str]:
    """What image/tracer would keep of `app`, relative to it."""
    script = install()
    with tempfile.TemporaryDirectory(prefix="trace-") as tmp:
        listing = Path(tmp) / "files.txt"
        done = subprocess.run(["node", str(script), "--app", str(app), "--list", str(listing)], capture_output=True,
                              text=True, timeout=600, env=node_env(), check=False)
        if done.returncode != 0:
            raise UpstreamError(f"image/tracer could not trace {app}: {done.stderr.strip()[-500:]}")
        return set(listing.read_text().split())
