"""Both stacks rendered once per test session, as the offline renderer writes them."""

from __future__ import annotations

import functools
from typing import Any

from tools.harness import Recording
from tools.render import manifest, render

STACKS = ("dev", "prod")


@functools.cache
def recording(stack: str) -> Recording:
    return render(stack)


def manifests(stack: str) -> list[dict[str, Any]]:
    rec = recording(stack)
    return [manifest(rec, r) for r in rec.resources if r.type.startswith("kubernetes:") and r.custom]
