"""The runbook's (docs/operations.md) commands name only config keys Pulumi.yaml declares, outputs
docs/outputs.md documents and make targets the Makefile has, and every `pulumi` command names
its stack."""

from __future__ import annotations

import re

import yaml

from tests.test_outputs_doc import documented
from tools.harness import ROOT


def runbook() -> str:
    return (ROOT / "docs" / "operations.md").read_text()


def commands() -> list[str]:
    """Command lines of the runbook's sh blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", runbook(), re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_runbook_config_keys_are_declared_in_pulumi_yaml() -> None:
    declared = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    # A key, not a type token inside a URN (`x402-bundler:index:DataServices`).
    used = set(re.findall(r"x402-bundler:(\w+)(?![\w:])", runbook()))
    assert {"imageRef", "arweaveWallet", "dbPassword", "apiReplicas", "protectData"} <= used
    assert used - declared == set()


def test_runbook_outputs_are_documented() -> None:
    used = {m for line in commands() for m in re.findall(r"pulumi stack output (\w+)", line)}
    assert used, "the runbook reads no stack output"
    assert used - set(documented()) == set()


def test_runbook_make_targets_exist_and_every_pulumi_command_names_its_stack() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = {m for line in commands() for m in re.findall(r"\bmake (\w+)", line)}
    assert used and used - targets == set()
    pulumi = [line for line in commands() if line.startswith("pulumi ")]
    assert len(pulumi) >= 10
    assert [line for line in pulumi if "--stack " not in line] == []


def test_runbook_urns_are_ones_the_stacks_register() -> None:
    used = set(re.findall(r"urn:pulumi:[^'\s]+", runbook()))
    snapshots = ROOT / "tests" / "snapshots"
    known = {u for f in snapshots.glob("urns-*.txt") for u in f.read_text().split()}
    assert used and used - known == set()
