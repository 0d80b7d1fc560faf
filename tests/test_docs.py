"""The docs' generated parts (architecture diagram, parameters table) are the program's own, not
copies that drift; and every page under docs/ is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers import recording
from tools.params import parameters_table
from tools.render import architecture

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_the_architecture_diagram_is_the_dev_stacks_dependency_graph() -> None:
    match = re.search(r"<!-- architecture: .*? -->\n```mermaid\n(.*?)```\n<!-- end architecture -->",
                      ARCHITECTURE.read_text(), re.S)
    assert match, "docs/architecture.md lost its generated architecture block"
    expected = architecture(recording("dev"))
    assert match.group(1) == expected, f"docs/architecture.md's diagram is stale; replace the block with:\n{expected}"


def test_the_parameters_table_is_pulumi_yaml() -> None:
    match = re.search(r"<!-- parameters: .*? -->\n(.*?)<!-- end parameters -->", CONFIGURATION.read_text(), re.S)
    assert match, "docs/configuration.md lost its generated parameters table"
    expected = parameters_table()
    assert match.group(1) == expected, "docs/configuration.md's parameters table is stale: run `python -m tools.params`"
    assert expected.count("\n") == 2 + len(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])


def links(page: Path) -> set[Path]:
    """Local files a Markdown page links to (anchors and URLs left out)."""
    found = set()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            found.add((page.parent / target).resolve())
    return found


def test_the_readme_stays_a_users_page() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_every_doc_is_reachable_from_the_readme_and_every_local_link_resolves() -> None:
    pages = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
    broken = {(p.name, str(t)) for p in pages for t in links(p) if not t.exists()}
    assert broken == set()
    reached, pending = {README.resolve()}, [README]
    while pending:
        for target in links(pending.pop()):
            if target.suffix == ".md" and target not in reached and target.exists():
                reached.add(target)
                pending.append(target)
    assert {p.resolve() for p in (ROOT / "docs").glob("*.md")} - reached == set()
