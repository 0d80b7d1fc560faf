"""A laptop for scripts/pulumi-up.sh and tools/doctor.py: a PATH of stand-ins (tests/cli_stubs/stub.py
for pulumi, kubectl, kind, docker and curl) and the few system tools the script uses, and what the
calls left. `run(..., doctor=False)` puts a passing stand-in where `make up` runs `make doctor`,
for the script's own steps past it (the repository's dev and prod stack files hold example values
and no secrets, so the real doctor stops them, as it should)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.harness import ROOT

SCRIPT = ROOT / "scripts" / "pulumi-up.sh"
STUB = ROOT / "tests" / "cli_stubs" / "stub.py"
TOOLS = ("pulumi", "kubectl", "kind", "docker", "curl")
# What the script may use from the system; the stand-ins replace everything else, so a real
# docker or kind on the test machine is never reached.
SYSTEM = ("bash", "sh", "env", "sed", "grep", "head", "tr", "base64", "mkdir", "cat", "sort", "dirname", "ln",
          "node", "sleep", "rm")


@dataclass
class Laptop:
    """A machine for the script: a PATH of stand-ins and system tools, and what the calls left."""

    tmp: Path
    log: Path
    state: Path
    local_dir: Path
    bin: Path

    def run(self, stack: str = "local", action: str = "up", doctor: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
        base = {"PATH": str(self.bin), "HOME": str(self.tmp), "STUB_LOG": str(self.log),
                "STUB_STATE": str(self.state), "STUB_POOL": str(self.tmp / "pool"),
                "X402_LOCAL_DIR": str(self.local_dir)}
        if not doctor:
            stand_in = self.tmp / "doctor-stand-in"
            stand_in.write_text('#!/bin/sh\necho "doctor: stand-in, all checks pass"\n')
            stand_in.chmod(0o755)
            base["X402_PYTHON"] = str(stand_in)
        return subprocess.run(["bash", str(SCRIPT), stack, action], env={**base, **env}, capture_output=True,
                              text=True, timeout=120)

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def commands(self) -> list[str]:
        return [" ".join([c["program"], *c["args"]]) for c in self.calls()]

    def remove(self, tool: str) -> None:
        (self.bin / tool).unlink()

    def state_of(self, name: str) -> str:
        return (self.state / name).read_text()


def _wrapper(path: Path, program: str) -> None:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" {program} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def make_laptop(tmp_path: Path) -> Laptop:
    """Docker, kind, kubectl and curl installed; no pulumi on the PATH, no cluster, nothing set."""
    pool, bin_dir, state = tmp_path / "pool", tmp_path / "bin", tmp_path / "state"
    for d in (pool, bin_dir, state):
        d.mkdir()
    for tool in TOOLS:
        _wrapper(pool / tool, tool)
        if tool != "pulumi":
            (bin_dir / tool).symlink_to(pool / tool)
    for tool in SYSTEM:
        found = shutil.which(tool)
        assert found, f"{tool} is needed on this machine"
        (bin_dir / tool).symlink_to(found)
    return Laptop(tmp_path, tmp_path / "calls.log", state, tmp_path / "repo-local", bin_dir)
