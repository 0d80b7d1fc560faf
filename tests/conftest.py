"""Shared fixtures: each stack rendered once per session, as most component tests read it."""

from __future__ import annotations

import pytest

from tests.test_workloads import render
from tools.harness import Recording


@pytest.fixture(scope="session")
def dev() -> Recording:
    return render("dev")


@pytest.fixture(scope="session")
def prod() -> Recording:
    return render("prod")
