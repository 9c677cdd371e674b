"""Fixtures of the manager tests: a hub store, a real hub on loopback, a models dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manager.hubstub import StubHub, running_stub


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
