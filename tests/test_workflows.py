"""The CI/CD workflows parse, call what exists here, pin their actions, and do what we say;
GitHub's schema accepts them and zizmor finds nothing that is not fixed or explained."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.harness import ROOT

WORKFLOW_DIR = ROOT / ".github" / "workflows"
# Every file GitHub would run, whoever adds it: both extensions count.
WORKFLOWS = sorted(p for p in WORKFLOW_DIR.iterdir() if p.suffix in (".yml", ".yaml"))
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"
BIN = Path(sys.executable).parent
MAKE_TARGETS = set(re.findall(r"^([a-z][\w.-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


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
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    # The commit says nothing to a reader: the release it is stays beside it.
    for line in path.read_text().splitlines():
        if re.match(r"\s*-? ?uses: ", line):
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_commands_name_make_targets_that_exist(path: Path) -> None:
    for step in steps(load(path)):
        for target in re.findall(r"\bmake (?:-C \"?\$side\"? )?([a-z][\w-]*)", step.get("run", "")):
            assert target in MAKE_TARGETS, f"{path.name}: make {target}"


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


def schema_errors(paths: list[Path]) -> str:
    """check-jsonschema against GitHub's workflow schema (vendored in the package: no network)."""
    run = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return "" if run.returncode == 0 else run.stdout + run.stderr


def test_every_workflow_matches_githubs_schema() -> None:
    assert not schema_errors(WORKFLOWS)


def test_the_schema_check_rejects_a_job_without_a_runner(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - run: echo\n")
    assert "'runs-on' is a required property" in schema_errors([broken])


def zizmor(workflows: Path, *options: str) -> tuple[list[dict[str, Any]], set[str]]:
    """zizmor's findings (those its configuration does not ignore) and the files it audited.

    A file zizmor cannot parse is skipped with a warning, not a finding: hence the second value.
    """
    run = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--format", "json", "--no-exit-codes", *options, str(workflows)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    audited = {Path(p).name for p in re.findall(r"completed (\S+)", run.stderr)}
    return json.loads(run.stdout), audited


def summary(findings: list[dict[str, Any]]) -> list[str]:
    return [
        f"{f['ident']} {loc['symbolic']['key']['Local']['verbatim_path']}:"
        f"{loc['concrete']['location']['start_point']['row'] + 1}"
        for f in findings for loc in f["locations"] if loc["symbolic"]["kind"] == "Primary"
    ]


def ignores() -> list[tuple[str, str, list[str]]]:
    """(rule, ignore entry, the comment lines right above it) from zizmor's configuration."""
    lines = ZIZMOR_CONFIG.read_text().splitlines()
    config = yaml.safe_load(ZIZMOR_CONFIG.read_text())
    found = []
    for rule, body in config["rules"].items():
        for entry in body.get("ignore", []):
            (at,) = [i for i, line in enumerate(lines) if line.strip() == f"- {entry}"]
            above = []
            while at > 0 and lines[at - 1].strip().startswith("#"):
                at -= 1
                above.insert(0, lines[at].strip("# "))
            found.append((rule, entry, above))
    return found


def test_zizmor_audits_every_workflow_and_finds_nothing_unexplained() -> None:
    findings, audited = zizmor(WORKFLOW_DIR, "--config", str(ZIZMOR_CONFIG))
    assert audited == {p.name for p in WORKFLOWS}
    assert summary(findings) == []


def test_every_zizmor_ignore_gives_its_reason_and_still_silences_a_finding() -> None:
    findings, _ = zizmor(WORKFLOW_DIR, "--no-config")
    raised = {(f["ident"], Path(loc["symbolic"]["key"]["Local"]["verbatim_path"]).name)
              for f in findings for loc in f["locations"]}
    assert ignores()
    for rule, entry, reason in ignores():
        assert len(" ".join(reason)) >= 40, f"{rule}: {entry} has no reason above it"
        assert (rule, entry.split(":")[0]) in raised, f"{rule}: {entry} ignores nothing: remove it"


def test_zizmor_flags_an_unpinned_action_and_a_kept_token(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
    )
    findings, audited = zizmor(workflows, "--no-config")
    assert audited == {"ci.yml"}
    assert {f["ident"] for f in findings} >= {"unpinned-uses", "artipacked"}
