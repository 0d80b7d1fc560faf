"""GitHub delivery: the token the package check reads with, and the opt-in declaration of the
delivery pipeline's GitHub side (repository, prod reviewers, CI secrets)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import pulumi

from components.settings.reader import Problem, Reader, list_command, secret, set_command


@dataclass(frozen=True)
class GithubSettings:
    token: Optional[pulumi.Output[str]]
    delivery: bool
    repository: Optional[str]
    prod_reviewer_ids: tuple[int, ...]
    ci_pulumi_access_token: Optional[pulumi.Output[str]]
    ci_pulumi_passphrase: Optional[pulumi.Output[str]]
    ci_kubeconfig_dev: Optional[pulumi.Output[str]]
    ci_kubeconfig_prod: Optional[pulumi.Output[str]]
    ci_preview_kubeconfig_dev: Optional[pulumi.Output[str]]
    ci_preview_kubeconfig_prod: Optional[pulumi.Output[str]]


def numeric_reviewers(reviewer_ids: tuple[str, ...]) -> list[Problem]:
    """GitHub's environment API takes user ids; a login would be refused at `up`."""
    logins = [v for v in reviewer_ids if not v.isdigit()]
    if not logins:
        return []
    return [
        Problem(
            "githubProdReviewerIds",
            f"{', '.join(logins)}: not numeric GitHub user ids (logins are not accepted).",
            f"{list_command('githubProdReviewerIds', '<id>')}  (the id: gh api users/<login> --jq .id)",
        )
    ]


def delivery_complete(
    enabled: bool, repository: Optional[str], reviewers: tuple[int, ...], has_token: bool
) -> list[Problem]:
    if not enabled:
        return []
    problems: list[Problem] = []
    if not (repository and re.fullmatch(r"[\w.-]+/[\w.-]+", repository)):
        problems.append(Problem(
            "githubRepository",
            "must be owner/name when githubDelivery is true.",
            set_command("githubRepository", "<owner>/<repo>"),
        ))
    if not reviewers:
        problems.append(Problem(
            "githubProdReviewerIds",
            "must list at least one GitHub user id: prod deploys need a reviewer.",
            list_command("githubProdReviewerIds", "<user id>"),
        ))
    if not has_token:
        problems.append(Problem(
            "githubToken",
            "is required when githubDelivery is true (repo and admin:org scopes).",
            set_command("githubToken", "<token>", secret=True),
        ))
    return problems


def read_github(r: Reader) -> GithubSettings:
    reviewer_ids = r.strings("githubProdReviewerIds", ())
    r.report(numeric_reviewers(reviewer_ids))
    github = GithubSettings(
        token=secret(r.secret_text("githubToken")),
        delivery=r.boolean("githubDelivery", False),
        repository=r.text("githubRepository", None),
        prod_reviewer_ids=tuple(int(v) for v in reviewer_ids if v.isdigit()),
        ci_pulumi_access_token=secret(r.secret_text("ciPulumiAccessToken")),
        ci_pulumi_passphrase=secret(r.secret_text("ciPulumiPassphrase")),
        ci_kubeconfig_dev=secret(r.secret_text("ciKubeconfigDev")),
        ci_kubeconfig_prod=secret(r.secret_text("ciKubeconfigProd")),
        ci_preview_kubeconfig_dev=secret(r.secret_text("ciPreviewKubeconfigDev")),
        ci_preview_kubeconfig_prod=secret(r.secret_text("ciPreviewKubeconfigProd")),
    )
    r.report(delivery_complete(github.delivery, github.repository, github.prod_reviewer_ids, github.token is not None))
    return github
