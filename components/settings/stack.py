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


def check_examples(r: Reader, stack: str, environment: Environment, declared: set[str]) -> None:
    """`exampleValues` lists the stack file's keys whose values are examples (an owner, a bot,
    addresses, hosts): an explicit marker, so nothing has to guess. prod refuses to deploy while
    any is listed; a preview, the offline render and dev say which remain."""
    keys = r.strings("exampleValues", ())
    unknown = [k for k in keys if k not in declared]
    if unknown:
        r.fail("exampleValues", f"names {', '.join(unknown)}, which Pulumi.yaml does not declare.",
               f"remove them from {PROJECT}:exampleValues in Pulumi.{stack}.yaml")
    if not keys:
        return
    listed = ", ".join(keys)
    deploying = not pulumi.runtime.is_dry_run() and not os.environ.get(OFFLINE_ENV)
    if environment == "prod" and deploying:
        r.fail("exampleValues", f"still lists {listed}: their values in Pulumi.{stack}.yaml are examples, "
                                "and prod does not deploy examples.",
               f"give each its real value, then remove it from {PROJECT}:exampleValues in Pulumi.{stack}.yaml")
    else:
        pulumi.log.warn(f"{PROJECT}:exampleValues: {listed} still hold example values in Pulumi.{stack}.yaml; "
                        "replace them (prod refuses to deploy while any is listed).")
