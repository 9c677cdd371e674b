"""Fixtures of the manager tests: a hub store, a real hub on loopback, a models dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manager.hubstub import StubHub, running_stub
from tests.support.lostexc import failing_on_lost_task_exceptions


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "models").mkdir(parents=True)
    return root


@pytest.fixture
def hub(store: Path) -> Iterator[StubHub]:
    with running_stub(store) as h:
        yield h


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def no_lost_task_exceptions() -> Iterator[list[str]]:
    """Every manager test fails if an exception was left in a task nobody awaited."""
    with failing_on_lost_task_exceptions() as lost:
        yield lost
