"""Stack identity: which stack this is, for which environment, in which namespace, at which
app version. Every component takes this small value for its names and labels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import pulumi

from components.names import PROJECT
from components.settings.reader import Reader
from components.settings.values import namespace_name

# Set by tools.harness: the offline render and the tests run the program as `up` does, but
# deploy nothing, so example values only warn there.
OFFLINE_ENV = "X402_BUNDLER_OFFLINE"

Environment = Literal["dev", "prod"]


@dataclass(frozen=True)
class StackIdentity:
    stack: str
    """The Pulumi stack name (labels: `app.kubernetes.io/instance`)."""
    environment: Environment
    namespace: str
    """The Kubernetes namespace every namespaced object goes to."""
    app_version: str
    """The bundler version (labels: `app.kubernetes.io/version`)."""

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


def read_environment(r: Reader) -> Environment:
    return r.choice("environment", ("dev", "prod"), "dev")  # type: ignore[return-value]


def read_stack(r: Reader, stack: str, environment: Environment, app_version: str) -> StackIdentity:
    namespace = r.text("namespace", PROJECT)
    r.report(namespace_name("namespace", namespace))
    return StackIdentity(stack=stack, environment=environment, namespace=namespace, app_version=app_version)


# Example values a deploy cannot work with, in any stack: why each fails.
CANNOT_WORK = {
    "imageRepository": "the image would be pushed to, or pulled from, an owner the tokens are not for",
    "registryUsername": "the registry login would name a user the tokens are not for",
    "imagePromoteStack": "the image would be promoted from a stack that is not yours",
}
# What a stack really does with an example value it can deploy with.
WHAT_IT_DOES = {
    "paymentAddress": "payments go to {value}",
    "publicUrl": "the API tells clients it is at {value}",
    "ingressHost": "the Ingress answers for {value}",
}


def check_examples(r: Reader, stack: str, environment: Environment, declared: set[str]) -> None:
    """`exampleValues` lists the stack file's keys whose values are examples (an owner, a bot,
    addresses, hosts): an explicit marker, so nothing has to guess. Deploying, prod refuses every
    one and dev those it cannot work with (CANNOT_WORK); otherwise each warns with what the stack
    will do with it. A preview and the offline render only warn."""
    keys = r.strings("exampleValues", ())
    unknown = [k for k in keys if k not in declared]
    if unknown:
        r.fail("exampleValues", f"names {', '.join(unknown)}, which Pulumi.yaml does not declare.",
               f"remove them from {PROJECT}:exampleValues in Pulumi.{stack}.yaml")
    if not keys:
        return
    fix = f"give each its real value, then remove it from {PROJECT}:exampleValues in Pulumi.{stack}.yaml"
    deploying = not pulumi.runtime.is_dry_run() and not os.environ.get(OFFLINE_ENV)
    if environment == "prod" and deploying:
        r.fail("exampleValues", f"still lists {', '.join(keys)}: their values in Pulumi.{stack}.yaml are examples, "
                                "and prod does not deploy examples.", fix)
        return
    fatal = [k for k in keys if k in CANNOT_WORK]
    if fatal and deploying:
        r.fail("exampleValues", f"still lists {', '.join(fatal)}, which no deploy can work with: "
                                f"{'; '.join(f'{k}: {CANNOT_WORK[k]}' for k in fatal)}.", fix)
    effects = [WHAT_IT_DOES[k].format(value=r.text(k, "(unset)")) if k in WHAT_IT_DOES
               else f"{k} is {r.text(k, '(unset)')}" for k in keys if not (deploying and k in CANNOT_WORK)]
    if not effects:
        return
    if environment == "prod":
        refused = "prod refuses all of them"
    else:
        refused = f"dev refuses {', '.join(fatal)}" if fatal else ""
    note = f" (deploying, {refused})" if refused and not deploying else ""
    pulumi.log.warn(f"{PROJECT}:exampleValues: Pulumi.{stack}.yaml still holds examples: {'; '.join(effects)}{note}. "
                    f"Replace each, then remove it from {PROJECT}:exampleValues.")
