"""The delivery pipeline's GitHub side, declared: Actions environments, reviewers, secrets, variables.

Seed risk 7 is also a process risk: who may deploy prod, from which ref, with which
credentials. Here `prod` requires reviewers and accepts only release tags, `dev` only `main`
and release tags (the refs `.github/workflows/deploy.yml` deploys from), and each
cluster's kubeconfig lives only in the environment that deploys to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_github as github

from components.settings.github import GithubSettings

DEPLOY_BRANCH = "main"
RELEASE_TAGS = "v*.*.*"
# Environment -> the (kind, pattern) refs that may deploy to it, at most one per kind: what
# deploy.yml triggers on.
DEPLOY_REFS: dict[str, tuple[tuple[str, str], ...]] = {
    "dev": (("branch", DEPLOY_BRANCH), ("tag", RELEASE_TAGS)),
    "prod": (("tag", RELEASE_TAGS),),
}


@dataclass(frozen=True)
class GithubDeliveryArgs:
    github: GithubSettings
    """The delivery settings; validation guarantees repository, reviewers and token."""
    image_repository: str
    """The image repository the workflows build and promote (`IMAGE_REPOSITORY`)."""


def _resource_name(text: str) -> str:
    return text.lower().replace("_", "-")


class GithubDelivery(pulumi.ComponentResource):
    """Environments `dev` and `prod` of the infrastructure repository, and what its workflows read."""

    environments: list[str]

    def __init__(self, name: str, args: GithubDeliveryArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:GithubDelivery", name, None, opts)
        s = args.github
        owner, repository = str(s.repository).split("/", 1)
        provider = github.Provider(
            f"{name}-provider", owner=owner, token=s.token, opts=pulumi.ResourceOptions(parent=self)
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        reviewers = list(s.prod_reviewer_ids)
        envs = {
            "dev": github.RepositoryEnvironment(
                f"{name}-env-dev",
                repository=repository,
                environment="dev",
                deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                    protected_branches=False, custom_branch_policies=True
                ),
                opts=child,
            ),
            "prod": github.RepositoryEnvironment(
                f"{name}-env-prod",
                repository=repository,
                environment="prod",
                reviewers=[github.RepositoryEnvironmentReviewerArgs(users=reviewers)],
                # A lone reviewer who pushed the tag must still be able to approve.
                prevent_self_review=len(reviewers) > 1,
                can_admins_bypass=False,
                # Custom policies, not "protected branches": deploy.yml deploys prod from tags,
                # which a protected-branches policy refuses.
                deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                    protected_branches=False, custom_branch_policies=True
                ),
                opts=child,
            ),
        }
        for env, refs in DEPLOY_REFS.items():
            for kind, pattern in refs:
                github.RepositoryEnvironmentDeploymentPolicy(
                    f"{name}-{env}-{kind}-policy",
                    repository=repository,
                    environment=envs[env].environment,
                    branch_pattern=pattern if kind == "branch" else None,
                    tag_pattern=pattern if kind == "tag" else None,
                    opts=child,
                )
        for env, kubeconfig in (("dev", s.ci_kubeconfig_dev), ("prod", s.ci_kubeconfig_prod)):
            if kubeconfig is not None:
                github.ActionsEnvironmentSecret(
                    f"{name}-{env}-kubeconfig",
                    repository=repository,
                    environment=envs[env].environment,
                    secret_name="KUBECONFIG_B64",
                    value=kubeconfig,
                    opts=child,
                )
        for secret_name, value in (
            ("PULUMI_ACCESS_TOKEN", s.ci_pulumi_access_token),
            ("PULUMI_CONFIG_PASSPHRASE", s.ci_pulumi_passphrase),
            # Pull-request previews run in no environment (prod's reviewers would block them):
            # read-only kubeconfigs as repository secrets.
            ("PREVIEW_KUBECONFIG_DEV_B64", s.ci_preview_kubeconfig_dev),
            ("PREVIEW_KUBECONFIG_PROD_B64", s.ci_preview_kubeconfig_prod),
        ):
            if value is not None:
                github.ActionsSecret(
                    f"{name}-{_resource_name(secret_name)}",
                    repository=repository,
                    secret_name=secret_name,
                    value=value,
                    opts=child,
                )
        variables = {"IMAGE_REPOSITORY": args.image_repository}
        # The workflows address stacks as <PULUMI_ORG>/x402-bundler/<stack>.
        organization = pulumi.get_organization()
        if organization:
            variables["PULUMI_ORG"] = organization
        for variable, text in variables.items():
            github.ActionsVariable(
                f"{name}-{_resource_name(variable)}",
                repository=repository,
                variable_name=variable,
                value=text,
                opts=child,
            )
        self.environments = sorted(envs)
        self.register_outputs({"environments": self.environments})
