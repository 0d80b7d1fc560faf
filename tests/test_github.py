"""The delivery pipeline's GitHub side: declared only when a stack opts in, secrets never in clear."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from tests.helpers import render
from tools.harness import Recording, placeholder_secrets

ENVIRONMENT = "github:index/repositoryEnvironment:RepositoryEnvironment"
POLICY = "github:index/repositoryEnvironmentDeploymentPolicy:RepositoryEnvironmentDeploymentPolicy"
ENV_SECRET = "github:index/actionsEnvironmentSecret:ActionsEnvironmentSecret"
REPO_SECRET = "github:index/actionsSecret:ActionsSecret"
VARIABLE = "github:index/actionsVariable:ActionsVariable"
DELIVERY = {
    "githubDelivery": True, "githubRepository": "example-org/x402-bundler-infra", "githubProdReviewerIds": [4242, 4343],
}
CI_SECRETS = ("ciPulumiAccessToken", "ciKubeconfigDev", "ciKubeconfigProd", "ciPulumiPassphrase", "githubToken")


@pytest.fixture(scope="module")
def delivery() -> Recording:
    return render("dev", overrides=DELIVERY)


def environments(rec: Recording) -> dict[str, Any]:
    return {r.inputs["environment"]: r for r in rec.of_type(ENVIRONMENT)}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_off_by_default(stack: str) -> None:
    rec = render(stack)
    assert [r.type for r in rec.resources if r.type.startswith("github:")] == []
    assert [p.name for p in rec.of_type("pulumi:providers:github") if p.name == "github-provider"] == []


def test_dev_and_prod_environments_on_the_infrastructure_repository_through_its_owner(delivery: Recording) -> None:
    envs = environments(delivery)
    assert set(envs) == {"dev", "prod"}
    provider = delivery.one("pulumi:providers:github", "github-provider")
    assert provider.inputs["owner"] == "example-org"
    assert provider.redacted_inputs["token"] == "[secret]"
    github_resources = [r for r in delivery.resources if r.type.startswith("github:")]
    assert github_resources and all(r.provider.startswith(provider.urn) for r in github_resources)
    assert all(r.inputs["repository"] == "x402-bundler-infra" for r in github_resources)


def test_prod_needs_the_configured_reviewers_and_no_admin_bypass(delivery: Recording) -> None:
    prod, dev = environments(delivery)["prod"], environments(delivery)["dev"]
    assert prod.inputs["reviewers"] == [{"users": [4242, 4343]}]
    assert prod.inputs["canAdminsBypass"] is False
    assert "reviewers" not in dev.inputs


@pytest.mark.parametrize(("reviewers", "prevent"), [([4242, 4343], True), ([4242], False)])
def test_self_review_is_prevented_unless_the_only_reviewer_would_be_locked_out(
    reviewers: list[int], prevent: bool
) -> None:
    prod = environments(render("dev", overrides={**DELIVERY, "githubProdReviewerIds": reviewers}))["prod"]
    assert prod.inputs["preventSelfReview"] is prevent


def test_prod_deploys_only_from_release_tags_and_dev_from_main_or_release_tags(delivery: Recording) -> None:
    for env in environments(delivery).values():
        assert env.inputs["deploymentBranchPolicy"] == {"protectedBranches": False, "customBranchPolicies": True}
    refs = {
        (
            p.inputs["environment"],
            "branch" if "branchPattern" in p.inputs else "tag",
            p.inputs.get("branchPattern") or p.inputs["tagPattern"],
        )
        for p in delivery.of_type(POLICY)
    }
    assert refs == {("dev", "branch", "main"), ("dev", "tag", "v*.*.*"), ("prod", "tag", "v*.*.*")}
    envs = environments(delivery)
    assert all(delivery.depends_on(p, envs[p.inputs["environment"]]) for p in delivery.of_type(POLICY))


def test_ci_secrets_are_declared_where_the_workflows_read_them_without_leaking(delivery: Recording) -> None:
    env_secrets = {(r.inputs["environment"], r.inputs["secretName"]) for r in delivery.of_type(ENV_SECRET)}
    assert env_secrets == {("dev", "KUBECONFIG_B64"), ("prod", "KUBECONFIG_B64")}
    assert {r.inputs["secretName"] for r in delivery.of_type(REPO_SECRET)} == {
        "PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PREVIEW_KUBECONFIG_DEV_B64", "PREVIEW_KUBECONFIG_PROD_B64"}
    envs = environments(delivery)
    assert all(delivery.depends_on(s, envs[s.inputs["environment"]]) for s in delivery.of_type(ENV_SECRET))
    for secret in [*delivery.of_type(ENV_SECRET), *delivery.of_type(REPO_SECRET)]:
        assert secret.redacted_inputs["value"] == "[secret]"
    redacted = json.dumps([r.redacted_inputs for r in delivery.resources])
    secrets = placeholder_secrets("dev")
    for key in CI_SECRETS:
        assert secrets[key] not in redacted, key


def test_an_unset_secret_is_skipped_not_declared_empty() -> None:
    rec = render(
        "dev",
        overrides=DELIVERY,
        secrets={"ciPulumiPassphrase": None, "ciKubeconfigProd": None, "ciPreviewKubeconfigProd": None},
    )
    assert {r.inputs["secretName"] for r in rec.of_type(REPO_SECRET)} == {
        "PULUMI_ACCESS_TOKEN", "PREVIEW_KUBECONFIG_DEV_B64"
    }
    assert {r.inputs["environment"] for r in rec.of_type(ENV_SECRET)} == {"dev"}


def test_variables_name_the_image_repository_and_the_pulumi_organization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pulumi, "get_organization", lambda: "example-org")
    rec = render("dev", overrides=DELIVERY)
    variables = {r.inputs["variableName"]: r.inputs["value"] for r in rec.of_type(VARIABLE)}
    assert variables == {"IMAGE_REPOSITORY": "ghcr.io/example-org/ar-io-x402-bundler", "PULUMI_ORG": "example-org"}
