"""Shared fixtures: each stack rendered once per session, as most component tests read it, and a
laptop of stand-in tools for the scripts (tests/laptop.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import recording
from tests.laptop import Laptop, make_laptop
from tools.harness import Recording


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    """Docker, kind, kubectl and curl installed; no pulumi on the PATH, no cluster, nothing set."""
    return make_laptop(tmp_path)


@pytest.fixture(scope="session")
def dev() -> Recording:
    return recording("dev")


@pytest.fixture(scope="session")
def prod() -> Recording:
    return recording("prod")
