"""checkov's Kubernetes checks over every stack's rendered manifests: no finding that is neither
fixed nor suppressed on the object itself with a reason, and docs/security.md lists exactly those
suppressions, with the same reasons, in the order this test finds them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.pod import scanner_exceptions
from tests import helpers
from tools.harness import ROOT
from tools.render import write

# Its own venv (scripts/install-test-deps.sh): it pins an older `packaging` than pulumi.
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
# Every stack file there is, so a stack added later is scanned without touching this test.
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
DOC = ROOT / "docs" / "security.md"


def checkov(directory: Path) -> dict[str, Any]:
    # --skip-download: nothing is fetched from the vendor's platform; the checks ship in the package.
    run = subprocess.run(
        [str(CHECKOV), "--framework", "kubernetes", "-d", str(directory), "--compact", "-o", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.stdout.startswith("{"), run.stderr[-2000:]
    return dict(json.loads(run.stdout))


def scan(stack: str, out: Path) -> dict[str, Any]:
    write(stack, out)
    return checkov(out)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return {stack: scan(stack, tmp_path_factory.mktemp(stack)) for stack in STACKS}


def rows(result: dict[str, Any], stack: str, kind: str) -> list[tuple[str, str, str, str]]:
    return sorted(
        (stack, r["file_path"].lstrip("/"), r["check_id"], (r.get("check_result") or {}).get("suppress_comment", ""))
        for r in result["results"].get(kind, [])
    )


def test_every_stack_file_is_scanned() -> None:
    assert set(STACKS) == set(helpers.STACKS)


def test_no_finding_is_left_unfixed_or_unexplained(results: dict[str, dict[str, Any]]) -> None:
    for stack, result in results.items():
        summary = result["summary"]
        assert summary["parsing_errors"] == 0 and summary["passed"] > 300, (stack, summary)
        assert rows(result, stack, "failed_checks") == []


def documented() -> list[tuple[str, str, str, str]]:
    """The suppression table of docs/security.md, row by row (header and rule skipped)."""
    found = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] in STACKS:
            found.append((cells[0], cells[1].strip("`"), cells[2].strip("`"), cells[3]))
    return found


def test_docs_list_every_suppression_with_its_reason_in_scan_order(results: dict[str, dict[str, Any]]) -> None:
    skipped = [row for stack in STACKS for row in rows(results[stack], stack, "skipped_checks")]
    assert skipped, "no suppression found: the table in docs/security.md would list nothing"
    assert all(len(reason) >= 40 for *_, reason in skipped), skipped
    assert documented() == skipped


def deployment(uid: int, **annotations: dict[str, str]) -> dict[str, Any]:
    container = {"name": "app", "image": "registry.invalid/app@sha256:" + "1" * 64,
                 "securityContext": {"runAsUser": uid, "runAsNonRoot": True}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "scan", "annotations": annotations.get("object") or {}},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {
            "metadata": {"labels": {"app": "a"}, "annotations": annotations.get("template") or {}},
            "spec": {"containers": [container]},
        }},
    }


def uid_check(tmp_path: Path, doc: dict[str, Any]) -> str:
    """What checkov says of CKV_K8S_40 (high uid) for one object: failed, passed or skipped."""
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(doc))
    result = checkov(tmp_path)["results"]
    (state,) = [k.split("_")[0] for k, v in result.items() for r in v if r["check_id"] == "CKV_K8S_40"]
    return state


def test_the_annotation_counts_on_the_object_not_on_its_pod_template(tmp_path: Path) -> None:
    skip = scanner_exceptions(("CKV_K8S_40", "a reason that is long enough to read as one"))
    assert skip == {"checkov.io/skip1": "CKV_K8S_40=a reason that is long enough to read as one"}
    assert uid_check(tmp_path, deployment(1001)) == "failed"
    assert uid_check(tmp_path, deployment(10001)) == "passed"
    assert uid_check(tmp_path, deployment(1001, template=skip)) == "failed"
    assert uid_check(tmp_path, deployment(1001, object=skip)) == "skipped"


@pytest.mark.parametrize("reason", ["uid=70 in the image", "two\nlines", " "])
def test_a_reason_checkov_would_misread_is_refused(reason: str) -> None:
    # checkov splits the value at every '=' and unpacks two parts: one more '=' crashes the scan.
    with pytest.raises(ValueError, match="one-line reason"):
        scanner_exceptions(("CKV_K8S_40", reason))


def test_scan_order_is_by_stack_then_file_then_check() -> None:
    keys = [row[:3] for row in documented()]
    assert keys == sorted(keys, key=lambda k: (STACKS.index(k[0]), k[1], k[2]))
    assert all(re.fullmatch(r"CKV_K8S_\d+", check) for _, _, check in keys)
