"""Shared fixtures: each stack rendered once per session, as most component tests read it."""

from __future__ import annotations

import pytest

from tests.helpers import recording
from tools.harness import Recording


@pytest.fixture(scope="session")
def dev() -> Recording:
    return recording("dev")


@pytest.fixture(scope="session")
def prod() -> Recording:
    return recording("prod")
