"""The objects a stack's program registers, as the runner applies them.

`live_objects` turns what the program registered under the mock engine into manifests with
their real values (Secrets included: this never goes through `tools.render`, whose output is
redacted, and nothing here is written under build/render).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.e2e.volumes import ObjectStore
from tools.harness import Recording, Registered
from tools.render import normalise

if TYPE_CHECKING:
    from tests.e2e.kubelet import Pod

WORKLOADS = ("StatefulSet", "Deployment", "Job")


@dataclass
class LiveObject:
    registered: Registered
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def live_objects(rec: Recording) -> list[LiveObject]:
    """Every Kubernetes object the program registered, with real (unredacted) values."""
    objects = []
    for r in rec.resources:
        if not (r.custom and r.type.startswith("kubernetes:")):
            continue
        body = normalise(r.inputs)
        body.setdefault("metadata", {})["name"] = rec.k8s_name(r)
        objects.append(LiveObject(r, body))
    return objects


def object_store(objects: list[LiveObject]) -> ObjectStore:
    store = ObjectStore()
    for o in objects:
        if o.kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (o.manifest.get("data") or {}).items()}
            data.update(o.manifest.get("stringData") or {})
            store.secrets[o.name] = data
        elif o.kind == "ConfigMap":
            store.config_maps[o.name] = dict(o.manifest.get("data") or {})
    return store


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Planned:
    name: str
    netns: str
    ip: str


@dataclass
class Workload:
    """A StatefulSet, Deployment or Job and the pods it has made."""

    obj: LiveObject
    pods: list[Pod] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    state: str = "pending"  # pending, running, done, failed, blocked
    detail: str = ""
    made: int = 0
    """Pods named so far: each new pod of a Deployment or Job takes the next number."""

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.obj.manifest["spec"]["template"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.template.get("metadata", {}).get("labels") or {})

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    @property
    def replicas(self) -> int:
        return int(self.obj.manifest["spec"].get("replicas", 1))

    def next_name(self) -> str:
        self.made += 1
        return f"{self.obj.name}-{self.made - 1}"
