"""The offline render: deterministic, complete, and free of secrets."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import recording
from tools.harness import ROOT, placeholder_secrets
from tools.render import mermaid, render, summary, write


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
        assert f.name.startswith(f"{doc['kind'].lower()}-")
        if doc["kind"] in ("ConfigMap", "Secret", "Job"):
            # Content-hashed object names stay inside the object, out of the file name.
            assert doc["metadata"]["name"] not in f.name, f.name


def test_keys_are_in_canonical_order_with_name_first(rendered: tuple[str, Path]) -> None:
    _, out = rendered

    def check(node: object, where: str) -> None:
        if isinstance(node, dict):
            keys = list(node)
            if "name" in keys and where != "":
                assert keys[0] == "name", f"{where}: {keys}"
            rest = [k for k in keys if k != "name"]
            if where != "":
                assert rest == sorted(rest), f"{where}: {keys}"
            for k, v in node.items():
                check(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                check(v, f"{where}[{i}]")

    for f in out.glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        assert list(doc)[:3] == ["apiVersion", "kind", "metadata"], f.name
        check({k: v for k, v in doc.items()}, "")


def test_a_changed_setting_diffs_as_that_value_and_the_pods_it_rolls(tmp_path: Path) -> None:
    base, head = tmp_path / "base", tmp_path / "head"
    write("dev", base)
    write("dev", head, overrides={"logLevel": "info"})
    changed = sorted(p.name for p in head.glob("*.yaml") if p.read_text() != (base / p.name).read_text())
    assert sorted(p.name for p in base.glob("*.yaml")) == sorted(p.name for p in head.glob("*.yaml"))
    # The ConfigMap itself, the three Deployments that read it, and the Job that runs again.
    assert changed == ["configmap-app-settings.yaml", "deployment-admin-deployment.yaml",
                       "deployment-api-deployment.yaml", "deployment-workers-deployment.yaml",
                       "job-migration-job.yaml"], changed
    diff = list(difflib.unified_diff((base / changed[0]).read_text().splitlines(),
                                     (head / changed[0]).read_text().splitlines(), lineterm=""))
    assert "-  LOG_LEVEL: debug" in diff and "+  LOG_LEVEL: info" in diff
    value_lines = [line for line in diff if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert len(value_lines) == 4, value_lines  # LOG_LEVEL and the content-hashed name, each - and +
    lines = summary(base, head)
    assert "replaced configmap-app-settings.yaml" in lines
    assert "changed  deployment-api-deployment.yaml (rolls its pods)" in lines
    assert "replaced job-migration-job.yaml (runs again)" in lines
    assert not [line for line in lines if "statefulset" in line or "secret-" in line]


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
    text = (out / "graph.mmd").read_text()
    assert text.startswith("flowchart LR\n") and " --> " in text
    # Every top-level component is a group holding its objects, so a dependency on a component
    # reads as a dependency on what it holds.
    components = [r for r in graph["resources"] if r["parent"] not in urns and r["type"].startswith("x402-bundler:")]
    assert text.count("  subgraph ") == len(components)
    custom = [r for r in graph["resources"] if r["type"].split(":")[0] in ("kubernetes", "docker-build", "random")]
    assert all(f'{r["type"].split(":")[-1]} {r["name"]}"]' in text for r in custom)


def test_render_runs_as_a_command_without_the_pulumi_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.render", "--stack", "prod", "--out", str(tmp_path / "prod")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "rendered stack prod:" in result.stdout
    assert (tmp_path / "prod" / "graph.json").exists()


def test_graph_groups_objects_by_component_without_namespace_edges() -> None:
    text = mermaid(recording("dev"))
    assert text.count("subgraph ") == text.count("\n  end") >= 10
    assert not [line for line in text.splitlines() if line.strip().startswith("namespace_namespace -->")]
    # The package check is in the rollout order: after the image, before the migration.
    assert "  image_index_version --> ghcr_package_github" in text
    assert "  ghcr_package_github --> migration_job" in text
    assert "  migration_job --> api_deployment" in text


def test_adding_objects_adds_graph_lines_and_rewrites_none() -> None:
    before = mermaid(recording("dev")).splitlines()
    after = mermaid(render("dev", overrides={"ingressEnabled": True, "ingressHost": "upload.example.org",
                                             "serviceMonitor": True})).splitlines()
    removed = [line for line in difflib.unified_diff(before, after, lineterm="") if line.startswith("-")
               and not line.startswith("---")]
    added = [line for line in difflib.unified_diff(before, after, lineterm="") if line.startswith("+")
             and not line.startswith("+++")]
    assert added and not removed, removed
