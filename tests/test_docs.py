"""The README's architecture diagram is the program's own graph, not a drawing that drifts."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import recording
from tools.render import architecture

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_architecture_is_the_dev_stacks_dependency_graph() -> None:
    match = re.search(r"<!-- architecture: .*? -->\n```mermaid\n(.*?)```\n<!-- end architecture -->",
                      README.read_text(), re.S)
    assert match, "README.md lost its generated architecture block"
    expected = architecture(recording("dev"))
    assert match.group(1) == expected, f"README.md's diagram is stale; replace the block with:\n{expected}"
