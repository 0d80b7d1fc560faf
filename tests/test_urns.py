"""Every resource keeps its URN: a renamed resource or type token would make `pulumi up`
replace live objects (the PostgreSQL StatefulSet and its volume among them) unless an alias
says where it came from. `tests/snapshots/urns-<stack>.txt` is the list as deployed; a change
to it must come with aliases, and then the snapshot is updated on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import STACKS, recording

SNAPSHOTS = Path(__file__).with_name("snapshots")


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_keeps_the_urn_it_was_deployed_with(stack: str) -> None:
    expected = (SNAPSHOTS / f"urns-{stack}.txt").read_text().split()
    actual = sorted(r.urn for r in recording(stack).resources)
    assert actual == expected, (
        f"URNs changed: gone {sorted(set(expected) - set(actual))}, new {sorted(set(actual) - set(expected))}"
    )
