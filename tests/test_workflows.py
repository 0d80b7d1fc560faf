"""The CI/CD workflows parse, call what exists here, pin their actions, and do what we say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.harness import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][\w.-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
# `make destroy` arrives with the local stack (issue 13 item 1, branch `local`); until that is
# merged, only the workflow written against it may name it.
PENDING_TARGETS = {"e2e-kind.yml": {"destroy"}}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return dict(doc)


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def test_the_four_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"pull-request.yml", "pr-comment.yml", "deploy.yml", "e2e-kind.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_well_formed_and_pins_its_actions(path: Path) -> None:
    doc = load(path)
    assert doc["on"] and doc["jobs"] and doc.get("permissions")
    for job in doc["jobs"].values():
        assert job["runs-on"] and job["steps"]
    for step in steps(doc):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_commands_name_make_targets_that_exist(path: Path) -> None:
    for step in steps(load(path)):
        for target in re.findall(r"\bmake (?:-C \"?\$side\"? )?([a-z][\w-]*)", step.get("run", "")):
            assert target in MAKE_TARGETS | PENDING_TARGETS.get(path.name, set()), f"{path.name}: make {target}"


def test_pull_requests_preview_with_the_policy_pack_or_diff_the_offline_render() -> None:
    doc = load(ROOT / ".github" / "workflows" / "pull-request.yml")
    preview = [s for s in doc["jobs"]["preview"]["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert preview and preview[0]["with"]["command"] == "preview" and preview[0]["with"]["policyPacks"] == "policy"
    assert (ROOT / preview[0]["with"]["policyPacks"] / "PulumiPolicy.yaml").exists()
    assert preview[0]["with"]["comment-on-pr"] is True
    fallback = doc["jobs"]["offline-diff"]
    assert fallback["if"] == "needs.credentials.outputs.available != 'true'"
    text = "\n".join(s.get("run", "") for s in fallback["steps"])
    assert "render STACK=" in text and "diff -ru render/base render/head" in text
    assert text.index("tools.render --summary") < text.index("diff -ru")
    assert any("make test" in s.get("run", "") for s in doc["jobs"]["test"]["steps"])


def test_fork_diffs_are_posted_without_running_fork_code() -> None:
    doc = load(ROOT / ".github" / "workflows" / "pr-comment.yml")
    assert "workflow_run" in doc["on"]
    assert not any(s.get("uses", "").startswith("actions/checkout@") for s in steps(doc))
    # The artifact comes from the fork: its PR number is only believed when that PR's head is
    # the commit the run rendered, so a fork cannot post into another pull request.
    (script,) = [s["with"]["script"] for s in steps(doc) if s.get("uses", "").startswith("actions/github-script@")]
    assert "workflow_run.head_sha" in script and "pr.head.sha" in script


def test_fork_code_never_keeps_a_token() -> None:
    doc = load(ROOT / ".github" / "workflows" / "pull-request.yml")
    checkouts = [s for s in doc["jobs"]["offline-diff"]["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) == 2 and all(s["with"]["persist-credentials"] is False for s in checkouts)


def test_main_deploys_dev_and_tags_deploy_prod_behind_its_environment() -> None:
    doc = load(ROOT / ".github" / "workflows" / "deploy.yml")
    assert doc["on"]["push"]["branches"] == ["main"] and doc["on"]["push"]["tags"] == ["v*.*.*"]
    dev, prod = doc["jobs"]["dev"], doc["jobs"]["prod"]
    assert dev["environment"] == "dev" and prod["environment"] == "prod"
    assert prod["if"] == "github.ref_type == 'tag'" and prod["needs"] == "dev"
    assert dev["permissions"]["packages"] == "write" and "packages" not in doc["permissions"]
    for job in (dev, prod):
        assert job["concurrency"]["cancel-in-progress"] is False
        (up,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
        assert up["with"]["command"] == "up"
    assert any(s.get("uses", "").startswith("docker/setup-buildx-action@") for s in dev["steps"])
    assert "docs/**" in doc["on"]["push"]["paths-ignore"]
