"""Shared fixtures. Server fixtures live in tests/support/ and are re-exported here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


SOAK = os.environ.get("ACCEL_SOAK") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the ``soak`` tests unless ``ACCEL_SOAK=1`` (``./scripts/soak`` sets it).

    A soak test is the long version of a check the default suite keeps a short version
    of (named in its docstring); deselected, not skipped: nothing is missing, it runs
    elsewhere. Keep soak tests in tests/reliability, the folder ``./scripts/soak`` runs.
    The default suite must stay under 10 minutes on 2 cores.
    """
    if SOAK:
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


@pytest.fixture(scope="session")
def accel_cmd() -> list[str]:
    """The argv prefix that runs the accel CLI of this checkout."""
    return [sys.executable, "-m", "accel"]


@pytest.fixture
def is_root() -> bool:
    return os.geteuid() == 0


from tests.support.hub import hub, hub_root  # noqa: E402, F401  (real accel hub on loopback)
from tests.support.nginx import nginx  # noqa: E402, F401  (real nginx on loopback: accel fetch)
