"""The offline render: deterministic, complete, and free of secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.harness import ROOT, placeholder_secrets
from tools.render import write


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"render-{request.param}")
    write(request.param, out)
    return request.param, out


def test_two_renders_are_byte_identical(rendered: tuple[str, Path], tmp_path: Path) -> None:
    stack, first = rendered
    write(stack, tmp_path)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_one_apply_ready_file_per_kubernetes_object(rendered: tuple[str, Path]) -> None:
    _, out = rendered
    files = sorted(out.glob("*.yaml"))
    assert len(files) > 10
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert f.name == f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"


def test_no_secret_value_is_written(rendered: tuple[str, Path]) -> None:
    stack, out = rendered
    text = "\n".join(p.read_text() for p in out.iterdir())
    wallet = json.loads(placeholder_secrets(stack)["arweaveWallet"])
    for key, value in placeholder_secrets(stack).items():
        if key != "arweaveWallet":
            assert value not in text, key
    assert wallet["d"] not in text and wallet["n"] not in text
    graph = json.loads((out / "graph.json").read_text())
    passwords = [r for r in graph["resources"] if r["type"] == "random:index/randomPassword:RandomPassword"]
    assert passwords  # the generated admin password's mock value must not appear either
    assert "mock-" not in text
    for f in out.glob("secret-*.yaml"):
        doc = yaml.safe_load(f.read_text())
        assert set((doc.get("stringData") or {}).values()) == {"REDACTED"}


def test_graph_lists_every_resource_with_its_dependencies(rendered: tuple[str, Path]) -> None:
    _, out = rendered
    graph = json.loads((out / "graph.json").read_text())
    urns = {r["urn"] for r in graph["resources"]}
    deployments = [r for r in graph["resources"] if r["type"] == "kubernetes:apps/v1:Deployment"]
    assert len(deployments) == 3
    for r in graph["resources"]:
        assert set(r["dependencies"]) <= urns | {""}
        assert r["parent"] in urns or "::pulumi:pulumi:Stack::" in r["parent"], r["parent"]
    mermaid = (out / "graph.mmd").read_text()
    assert mermaid.startswith("flowchart LR\n") and " --> " in mermaid
    # Every component is drawn with its children, so a dependency on a component reads right.
    assert mermaid.count(" -.- ") == sum(1 for r in graph["resources"] if r["parent"] in urns)


def test_render_runs_as_a_command_without_the_pulumi_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.render", "--stack", "prod", "--out", str(tmp_path / "prod")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "rendered stack prod:" in result.stdout
    assert (tmp_path / "prod" / "graph.json").exists()
