"""The README's command blocks and the stack files' set-up commands, run as written and in the order
shown, on a laptop of stand-in tools (tests/laptop.py): a helper that no longer exists, a target
that does not take its arguments, or a secret passed as an argument fails here.

Not run: `make test` (the suite itself), and a stack file's last line, `make doctor ... && make up`,
which stops, as it should, until the stack file's example values are replaced (tests/test_doctor.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.laptop import Laptop
from tools.harness import ROOT

SKIPPED = ("make test",)


def readme_blocks() -> list[str]:
    """Each sh block as one script (a block's lines share a shell, as typed), comments dropped."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = [re.split(r"\s+#", line)[0].strip() for line in block.replace("\\\n", " ").splitlines()]
        kept = [line for line in lines if line and not line.startswith(SKIPPED)]
        if kept:
            blocks.append("\n".join(kept))
    return blocks


def stack_file_commands(stack: str) -> list[str]:
    header = (ROOT / f"Pulumi.{stack}.yaml").read_text().split("config:", 1)[0]
    lines = [re.split(r"\s+#", line[1:])[0].strip() for line in header.splitlines() if line.startswith("#   make ")]
    assert lines[-1].startswith("make doctor") and "make up" in lines[-1]
    return lines[:-1]


def run_all(laptop: Laptop, commands: list[str]) -> None:
    work = laptop.tmp / "work"
    work.mkdir(exist_ok=True)
    for name in {m for c in commands for m in re.findall(r"(?:^|\s)<\s*([\w.-]+)(?=\s|$)", c)}:
        (work / name).write_text(f"value of {name}\n")
    make = laptop.bin / "make"
    if not make.exists():
        make.write_text(f'#!/bin/sh\nexec /usr/bin/make --no-print-directory -C "{ROOT}" "$@"\n')
        make.chmod(0o755)
    stand_in = laptop.tmp / "doctor-stand-in"
    stand_in.write_text('#!/bin/sh\necho "doctor: stand-in, all checks pass"\n')
    stand_in.chmod(0o755)
    passphrase = laptop.tmp / "team-passphrase"
    passphrase.write_text("team\n")
    for stack in ("dev", "prod"):
        (laptop.state / f"cluster-{stack}-cluster").write_text("")
    # As the checklists set them up: logged in, the team's passphrase exported, each stack's context
    # present; the doctor stand-in passes (the committed stack files hold examples, by design).
    env = {"PATH": str(laptop.bin), "HOME": str(laptop.tmp), "STUB_LOG": str(laptop.log),
           "STUB_STATE": str(laptop.state), "STUB_POOL": str(laptop.tmp / "pool"),
           "X402_LOCAL_DIR": str(laptop.local_dir), "STUB_LOGGED_IN": "1", "X402_PYTHON": str(stand_in),
           "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase)}
    for script in commands:
        done = subprocess.run(["bash", "-ec", script], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"failed:\n{script}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"


def test_the_readmes_commands_run_as_written_in_order(laptop: Laptop) -> None:
    blocks = readme_blocks()
    assert any("make secret STACK=prod KEY=cdpApiKeyId <" in b for b in blocks)
    run_all(laptop, blocks)
    calls = [" ".join([c["program"], *c["args"]]) for c in laptop.calls()]
    # Each secret went to pulumi on stdin, never as an argument.
    assert "pulumi config set --secret x402-bundler:arweaveWallet --stack dev" in calls
    assert (laptop.state / "config-dev-x402-bundler:arweaveWallet").read_text() == "value of wallet.json\n"
    assert not [c for c in calls if "value of" in c]
    assert "pulumi up --stack prod" in calls and "pulumi destroy --stack local" in calls
    # The rollback set the digest the block names, and took the promote source away.
    assert laptop.state_of("config-prod-x402-bundler:imageRef") == "ghcr.io/OWNER/ar-io-x402-bundler@sha256:DIGEST"
    assert "pulumi config rm x402-bundler:imagePromoteStack --stack prod" in calls


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_files_set_up_commands_run_as_written(laptop: Laptop, stack: str) -> None:
    commands = stack_file_commands(stack)
    assert commands[0] == f"make init STACK={stack}" and all("< " in c for c in commands[1:])
    run_all(laptop, commands)
    assert len(list(Path(laptop.state).glob(f"config-{stack}-x402-bundler:*"))) == len(commands) - 1
