"""The policy rules: each proven on synthetic manifests, then applied to both stacks."""

from __future__ import annotations

import copy
import runpy
import sys
from typing import Any

import pytest

from policy.rules import MANIFEST_RULES, check_manifest, migration_precedes_deployments
from tests.helpers import PROMOTED, STACKS, manifests, recording
from tools.harness import ROOT

GOOD: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "api", "labels": {"app.kubernetes.io/component": "api"}},
    "spec": {
        "template": {
            "spec": {
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 1001, "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "api",
                        "image": PROMOTED,
                        "env": [{"name": "TURBO_JWK_FILE", "value": "/w/wallet.json"},
                                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "c", "key": "db"}}}],
                        "resources": {
                            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 3001}},
                        "readinessProbe": {"exec": {"command": ["node", "check.js"]}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            }
        }
    },
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    m = copy.deepcopy(GOOD)
    node: Any = m
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    last = parts[-1]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return m


C = "spec.template.spec.containers.0"


def test_a_compliant_deployment_passes_every_rule() -> None:
    assert check_manifest(GOOD) == []


@pytest.mark.parametrize(
    ("rule", "path", "value"),
    [
        ("images-pinned", f"{C}.image", "ghcr.io/o/bundler:1.0.0"),
        ("images-pinned", f"{C}.image", "ghcr.io/o/bundler:latest"),
        ("resources-set", f"{C}.resources", {"requests": {"cpu": "1", "memory": "1Gi"}}),
        ("resources-set", f"{C}.resources.limits", {"cpu": "1"}),
        ("probes-set", f"{C}.livenessProbe", None),
        ("probes-set", f"{C}.readinessProbe", None),
        ("restricted-pod-security", "spec.template.spec.securityContext.runAsNonRoot", None),
        ("restricted-pod-security", f"{C}.securityContext.allowPrivilegeEscalation", True),
        ("restricted-pod-security", f"{C}.securityContext.capabilities", {"drop": ["NET_RAW"]}),
        ("restricted-pod-security", "spec.template.spec.securityContext.seccompProfile", None),
        ("restricted-pod-security", f"{C}.securityContext.readOnlyRootFilesystem", False),
        ("restricted-pod-security", "spec.template.spec.hostNetwork", True),
        ("restricted-pod-security", "spec.template.spec.containers", []),
        ("restricted-pod-security", "spec.template.spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
        (
            "restricted-pod-security", "spec.template.spec.volumes",
            [{"name": "n", "nfs": {"server": "nfs", "path": "/"}}],
        ),
        (
            "restricted-pod-security", "spec.template.spec.securityContext.sysctls",
            [{"name": "kernel.msgmax", "value": "1"}],
        ),
        ("restricted-pod-security", f"{C}.securityContext.procMount", "Unmasked"),
        ("restricted-pod-security", f"{C}.ports", [{"containerPort": 3001, "hostPort": 3001}]),
        ("no-plain-secrets", f"{C}.env", [{"name": "DB_PASSWORD", "value": "hunter2"}]),
        ("no-plain-secrets", f"{C}.env", [{"name": "CDP_API_KEY_SECRET", "value": "x"}]),
        (
            "no-plain-secrets", f"{C}.env",
            [{"name": "DB_PASSWORD", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "db"}}}],
        ),
        ("no-plain-secrets", f"{C}.env", [{"name": "WALLET", "value": '{"kty":"RSA","d":"' + "A" * 60 + '"}'}]),
    ],
)
def test_each_rule_catches_its_violation(rule: str, path: str, value: Any) -> None:
    problems = MANIFEST_RULES[rule](mutate(path, value))
    assert problems, f"{rule} missed {path}={value!r}"
    assert [p for p in check_manifest(mutate(path, value)) if p.startswith(f"{rule}:")]


def test_third_party_images_may_use_an_exact_version_but_not_latest() -> None:
    redis = mutate("metadata.labels", {"app.kubernetes.io/component": "redis-queue"})
    redis["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/library/redis:7.4.2-alpine3.21"
    assert MANIFEST_RULES["images-pinned"](redis) == []
    redis["spec"]["template"]["spec"]["containers"][0]["image"] = "redis:latest"
    assert MANIFEST_RULES["images-pinned"](redis)


def test_restricted_profile_allows_its_volume_types_and_safe_sysctls() -> None:
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "w", "secret": {"secretName": "w"}},
               {"name": "c", "configMap": {"name": "c"}}, {"name": "d", "persistentVolumeClaim": {"claimName": "d"}}]
    m = mutate("spec.template.spec.volumes", volumes)
    m["spec"]["template"]["spec"]["securityContext"]["sysctls"] = [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]
    assert MANIFEST_RULES["restricted-pod-security"](m) == []


def test_jobs_need_no_probes_but_no_ttl() -> None:
    job: dict[str, Any] = copy.deepcopy({"kind": "Job", "spec": {"template": GOOD["spec"]["template"]}})
    del job["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert MANIFEST_RULES["probes-set"](job) == []
    job["spec"]["ttlSecondsAfterFinished"] = 60
    assert MANIFEST_RULES["no-job-ttl"](job) == ["Job sets ttlSecondsAfterFinished"]


@pytest.mark.parametrize(
    ("key", "value", "bad"),
    [("DB_PASSWORD", "x", True), ("TURBO_JWK_FILE", "/w.json", False), ("AWS_SECRET_ACCESS_KEY", "x", True),
     ("PEM", "-----BEGIN RSA " + "PRIVATE KEY-----\nabc", True), ("LOG_LEVEL", "info", False)],
)
def test_config_maps_hold_no_secrets(key: str, value: str, bad: bool) -> None:
    assert bool(MANIFEST_RULES["no-plain-secrets"]({"kind": "ConfigMap", "data": {key: value}})) is bad


def _graph(dep: bool) -> list[dict[str, Any]]:
    job: dict[str, Any] = {"urn": "job", "type": "kubernetes:batch/v1:Job", "parent": "mig", "dependencies": [],
                           "labels": {"app.kubernetes.io/component": "migration"}}
    comp: dict[str, Any] = {"urn": "mig", "type": "x402-bundler:index:MigrationJob", "parent": None, "dependencies": [],
                            "labels": {}}
    deployment = {"urn": "dep", "type": "kubernetes:apps/v1:Deployment", "parent": None,
                  "dependencies": ["mig"] if dep else [], "labels": {"app.kubernetes.io/component": "api"}}
    return [job, comp, deployment]


def test_ordering_rule_follows_component_dependencies() -> None:
    assert migration_precedes_deployments(_graph(True)) == []
    assert migration_precedes_deployments(_graph(False)) == ["Deployment dep does not wait for the migration Job"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_object_of_both_stacks_passes_every_rule(stack: str) -> None:
    found = manifests(stack)
    assert len(found) > 10
    problems = {f"{m['kind']}/{m['metadata']['name']}": check_manifest(m) for m in found}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("stack", STACKS)
def test_both_stacks_migrate_before_deploying(stack: str) -> None:
    rec = recording(stack)
    resources = [{"urn": r.urn, "type": r.type, "parent": r.parent, "dependencies": r.dependencies,
                  "labels": r.get("metadata.labels") or {}} for r in rec.resources]
    assert migration_precedes_deployments(resources) == []


def test_the_pack_enforces_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "policy"))
    pack = runpy.run_path(str(ROOT / "policy" / "__main__.py"), run_name="policy_pack")
    names = {p.name for p in pack["POLICIES"]}
    assert names == {*MANIFEST_RULES, "migration-precedes-deployments"}
    sys.modules.pop("rules", None)
