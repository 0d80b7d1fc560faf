"""Policy pack: `pulumi preview --policy-pack policy` enforces the rules in rules.py."""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from rules import MANIFEST_RULES, Rule, migration_precedes_deployments


def _resource_policy(name: str, rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if not args.resource_type.startswith("kubernetes:"):
            return
        for problem in rule(args.props):
            report(problem, None)

    return ResourceValidationPolicy(
        name=name,
        description=(rule.__doc__ or name).strip().splitlines()[0],
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _ordering(args: StackValidationArgs, report: ReportViolation) -> None:
    resources: list[dict[str, Any]] = [
        {
            "urn": r.urn,
            "type": r.resource_type,
            "parent": r.parent.urn if r.parent else None,
            "dependencies": [d.urn for d in r.dependencies],
            "labels": ((r.props.get("metadata") or {}).get("labels") or {})
            if r.resource_type.startswith("kubernetes:") else {},
        }
        for r in args.resources
    ]
    for problem in migration_precedes_deployments(resources):
        report(problem, None)


POLICIES = [
    *(_resource_policy(name, rule) for name, rule in MANIFEST_RULES.items()),
    StackValidationPolicy(
        name="migration-precedes-deployments",
        description="Every bundler Deployment waits for the migration Job.",
        validate=_ordering,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
]

if __name__ == "__main__":
    PolicyPack(name="x402-bundler-policies", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
