"""docs/outputs.md is the contract: it lists exactly what the stacks export."""

from __future__ import annotations

import re

import pytest

from tests.helpers import STACKS, recording
from tools.harness import ROOT


def documented() -> dict[str, bool]:
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (yes|no) \|", (ROOT / "docs" / "outputs.md").read_text(), re.MULTILINE)
    return {name: secret == "yes" for name, _type, secret in rows}


@pytest.mark.parametrize("stack", STACKS)
def test_every_export_is_documented_and_every_documented_output_exported(stack: str) -> None:
    rec = recording(stack)
    assert set(rec.outputs) == set(documented())


@pytest.mark.parametrize("stack", STACKS)
def test_secret_flags_match(stack: str) -> None:
    rec = recording(stack)
    assert {name for name, secret in documented().items() if secret} == rec.secret_outputs
