"""Every rendered object of both stacks is valid Kubernetes, oldest to newest supported."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.helpers import STACKS, manifests

# The oldest version we support (PodDisruptionBudget policy/v1, StatefulSet PVC retention
# and Pod Security admission are all there) and the newest the schema package ships.
OLDEST, NEWEST = "1.29.0", "1.37.0"
# Custom resources have no schema in the official OpenAPI documents.
CUSTOM_KINDS = {"ServiceMonitor"}


def objects() -> list[Any]:
    return [
        pytest.param(m, id=f"{stack}-{m['kind']}-{m['metadata']['name']}")
        for stack in STACKS
        for m in manifests(stack)
        if m["kind"] not in CUSTOM_KINDS
    ]


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("obj", objects())
def test_object_matches_the_official_schema_in_strict_mode(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, NEWEST, strict=True)


def test_every_kind_we_render_is_checked_or_named_as_custom() -> None:
    kinds = {m["kind"] for stack in STACKS for m in manifests(stack)}
    assert {"Deployment", "Job", "StatefulSet", "NetworkPolicy", "Secret", "ConfigMap", "Service"} <= kinds
    assert kinds & CUSTOM_KINDS == {"ServiceMonitor"}
