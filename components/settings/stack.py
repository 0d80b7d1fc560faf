"""Stack identity: which stack this is, for which environment, in which namespace, at which
app version. Every component takes this small value for its names and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.names import PROJECT
from components.settings.reader import Reader
from components.settings.values import namespace_name

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
