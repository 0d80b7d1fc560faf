"""What a stack's docker-build Image builds beyond its context, read from what the program passed:
the Dockerfile (inline, or the context's own) and the named build contexts. The runner lays out the
tree from exactly these, so a program that passes the wrong Dockerfile runs the wrong tree."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from tests.e2e.upstream.common import ROOT, UpstreamError
from tests.e2e.upstream.context import Context, DockerIgnore

IMAGE_TYPE = "docker-build:index:Image"


@dataclass(frozen=True)
class BuildSpec:
    dockerfile: Optional[str] = None
    """The Dockerfile's text as the program passes it inline; None: the context's own Dockerfile."""
    named: tuple[tuple[str, str], ...] = ()
    """(name, location) of each named context, as the program passes it (relative to the project)."""

    @classmethod
    def of_inputs(cls, inputs: Mapping[str, Any]) -> BuildSpec:
        dockerfile = inputs.get("dockerfile") or {}
        if dockerfile.get("location"):
            raise UpstreamError(f"the image is built from the Dockerfile at {dockerfile['location']}: only an inline "
                                "Dockerfile or the context's own is emulated")
        named = (inputs.get("context") or {}).get("named") or {}
        return cls(dockerfile.get("inline"), tuple(sorted((k, str(v["location"])) for k, v in named.items())))

    @classmethod
    def of_resources(cls, resources: list[Any]) -> BuildSpec:
        """The one spec every docker-build Image of a rendering shares (one per platform)."""
        specs = {cls.of_inputs(r.inputs) for r in resources if r.type == IMAGE_TYPE}
        if len(specs) != 1:
            raise UpstreamError(f"the rendering has {len(specs)} different docker-build Image specs; expected one")
        return specs.pop()

    def contexts(self) -> dict[str, Context]:
        """The named contexts on this machine (local directories, relative to the project root)."""
        found = {}
        for name, location in self.named:
            path = (ROOT / location).resolve()
            if not path.is_dir():
                raise UpstreamError(f"named build context {name}={location} is not a directory under {ROOT}")
            # buildx applies no .dockerignore to a named context.
            found[name] = Context(path, DockerIgnore(()))
        return found

    def digest(self, into: Any) -> None:
        into.update(f"dockerfile\0{self.dockerfile if self.dockerfile is not None else '(context)'}\0".encode())
        for name, context in sorted(self.contexts().items()):
            into.update(f"named {name}\0".encode())
            context.digest(into)

    @property
    def label(self) -> str:
        if self.dockerfile is None:
            return "the context's Dockerfile"
        return f"an inline Dockerfile ({hashlib.sha256(self.dockerfile.encode()).hexdigest()[:12]})" + (
            f" with named contexts {', '.join(f'{n}={os.path.normpath(loc)}' for n, loc in self.named)}"
            if self.named else "")
