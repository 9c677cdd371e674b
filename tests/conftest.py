"""Shared fixtures. Server fixtures live in tests/support/ and are re-exported here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def accel_cmd() -> list[str]:
    """The argv prefix that runs the accel CLI of this checkout."""
    return [sys.executable, "-m", "accel"]


@pytest.fixture
def is_root() -> bool:
    return os.geteuid() == 0


from tests.support.hub import hub, hub_root  # noqa: E402, F401  (real accel hub on loopback)
from tests.support.nginx import nginx  # noqa: E402, F401  (real nginx on loopback: accel fetch)
