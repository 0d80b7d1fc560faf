"""The delivery pipeline's GitHub side is declared only when a stack opts in."""

from __future__ import annotations

import json

from tests.test_workloads import render
from tools.harness import placeholder_secrets

DELIVERY = {"githubDelivery": True, "githubRepository": "example-org/x402-bundler-infra", "githubProdReviewerIds": [4242, 4343]}


def test_off_by_default() -> None:
    rec = render("dev")
    assert [r for r in rec.resources if r.type.startswith("github:")] == []


def test_environments_with_prod_reviewers_and_protected_branches() -> None:
    rec = render("dev", overrides=DELIVERY)
    envs = {r.inputs["environment"]: r for r in rec.of_type("github:index/repositoryEnvironment:RepositoryEnvironment")}
    assert set(envs) == {"dev", "prod"}
    prod = envs["prod"]
    assert prod.inputs["repository"] == "x402-bundler-infra"
    assert prod.inputs["reviewers"] == [{"users": [4242, 4343]}]
    assert prod.inputs["deploymentBranchPolicy"] == {"protectedBranches": True, "customBranchPolicies": False}
    assert prod.inputs["canAdminsBypass"] is False
    (provider,) = [p for p in rec.of_type("pulumi:providers:github") if p.name == "github-provider"]
    assert provider.inputs["owner"] == "example-org"
    assert all(r.provider.startswith(provider.urn) for r in envs.values())


def test_ci_secrets_are_declared_without_leaking_values() -> None:
    rec = render("dev", overrides=DELIVERY)
    secrets = placeholder_secrets("dev")
    env_secrets = {(r.inputs["environment"], r.inputs["secretName"]) for r in rec.of_type("github:index/actionsEnvironmentSecret:ActionsEnvironmentSecret")}
    assert env_secrets == {("dev", "KUBECONFIG_B64"), ("prod", "KUBECONFIG_B64")}
    repo_secrets = {r.inputs["secretName"] for r in rec.of_type("github:index/actionsSecret:ActionsSecret")}
    assert repo_secrets == {"PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE"}
    redacted = json.dumps([r.redacted_inputs for r in rec.resources])
    for key in ("ciPulumiAccessToken", "ciKubeconfigDev", "ciKubeconfigProd", "ciPulumiPassphrase", "githubToken"):
        assert secrets[key] not in redacted, key
    variables = {r.inputs["variableName"]: r.inputs["value"] for r in rec.of_type("github:index/actionsVariable:ActionsVariable")}
    assert variables["IMAGE_REPOSITORY"] == "ghcr.io/example-org/ar-io-x402-bundler"
