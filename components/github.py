"""The delivery pipeline's GitHub side, declared: Actions environments, reviewers, secrets.

Seed risk 7 is also a process risk: who may deploy prod, with which credentials. Here the
`prod` environment requires reviewers and only protected branches deploy to it; the CI
secrets live in the environments that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_github as github

from components.config import Settings


@dataclass(frozen=True)
class GithubDeliveryArgs:
    settings: Settings
    """Validated stack settings (`github` section; validation guarantees repository and token)."""


class GithubDelivery(pulumi.ComponentResource):
    environments: list[str]

    def __init__(self, name: str, args: GithubDeliveryArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:GithubDelivery", name, None, opts)
        s = args.settings
        owner, repository = str(s.github.repository).split("/", 1)
        provider = github.Provider(f"{name}-provider", owner=owner, token=s.github.token, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        envs = {
            "dev": github.RepositoryEnvironment(f"{name}-env-dev", repository=repository, environment="dev", opts=child),
            "prod": github.RepositoryEnvironment(
                f"{name}-env-prod",
                repository=repository,
                environment="prod",
                reviewers=[github.RepositoryEnvironmentReviewerArgs(users=list(s.github.prod_reviewer_ids))],
                prevent_self_review=True,
                can_admins_bypass=False,
                deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                    protected_branches=True, custom_branch_policies=False
                ),
                opts=child,
            ),
        }
        for env, kubeconfig in (("dev", s.github.ci_kubeconfig_dev), ("prod", s.github.ci_kubeconfig_prod)):
            if kubeconfig is not None:
                github.ActionsEnvironmentSecret(
                    f"{name}-{env}-kubeconfig",
                    repository=repository,
                    environment=env,
                    secret_name="KUBECONFIG_B64",
                    plaintext_value=kubeconfig,
                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[envs[env]]),
                )
        for secret_name, value in (
            ("PULUMI_ACCESS_TOKEN", s.github.ci_pulumi_access_token),
            ("PULUMI_CONFIG_PASSPHRASE", s.github.ci_pulumi_passphrase),
        ):
            if value is not None:
                github.ActionsSecret(
                    f"{name}-{secret_name.lower().replace('_', '-')}",
                    repository=repository, secret_name=secret_name, plaintext_value=value, opts=child,
                )
        variables = {"IMAGE_REPOSITORY": s.image.repository, "IMAGE_CACHE_VERSION": str(s.image.cache_version)}
        for variable, text in variables.items():
            github.ActionsVariable(
                f"{name}-{variable.lower().replace('_', '-')}",
                repository=repository, variable_name=variable, value=text, opts=child,
            )
        self.environments = sorted(envs)
        self.register_outputs({"environments": self.environments})
