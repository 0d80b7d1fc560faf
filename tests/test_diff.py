"""`make diff` (tools/diff.py): every stack rendered at the base and in the working tree, what changed
said per stack; a base that is no commit is refused."""

from __future__ import annotations

import subprocess
import sys

from tools.harness import ROOT


def diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.diff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_base_commit_of_the_program_before_the_traced_image_rolls_every_bundler_pod() -> None:
    """4f2b451 made the traced Dockerfile the default: a new image digest, so every Deployment
    rolls and the migration Job runs again; the data services stay."""
    done = diff("--base", "4f2b451~1", "--stack", "local")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== local: 4 change(s)" in out
    for name in ("api", "workers", "admin"):
        assert f"changed  deployment-{name}-deployment.yaml (rolls its pods)" in out
    assert "replaced job-migration-job.yaml (runs again)" in out
    assert "-        image: localhost:5001/ar-io-x402-bundler@sha256:" in out
    assert "statefulset" not in out.split("== local:")[1].split("diff -ru")[0]


def test_a_base_that_is_no_commit_is_refused() -> None:
    done = diff("--base", "no-such-branch")
    assert done.returncode == 2 and "BASE=no-such-branch is no commit here" in done.stderr
