"""The README's generated parts (architecture diagram, parameters table) are the program's own,
not copies that drift."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers import recording
from tools.params import parameters_table
from tools.render import architecture

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_architecture_is_the_dev_stacks_dependency_graph() -> None:
    match = re.search(r"<!-- architecture: .*? -->\n```mermaid\n(.*?)```\n<!-- end architecture -->",
                      README.read_text(), re.S)
    assert match, "README.md lost its generated architecture block"
    expected = architecture(recording("dev"))
    assert match.group(1) == expected, f"README.md's diagram is stale; replace the block with:\n{expected}"


def test_readme_parameters_table_is_pulumi_yaml() -> None:
    match = re.search(r"<!-- parameters: .*? -->\n(.*?)<!-- end parameters -->", README.read_text(), re.S)
    assert match, "README.md lost its generated parameters table"
    expected = parameters_table()
    assert match.group(1) == expected, "README.md's parameters table is stale: run `python -m tools.params`"
    assert expected.count("\n") == 2 + len(yaml.safe_load((README.parent / "Pulumi.yaml").read_text())["config"])
