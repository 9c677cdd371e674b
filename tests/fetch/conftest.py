"""Fixtures of the accelerator tests: a directory of random files and its nginx."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.nginx import Nginx


@pytest.fixture(scope="session")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random files served by every nginx of these tests."""
    root = tmp_path_factory.mktemp("www")
    for name, size in [("big.bin", 24 << 20), ("small.bin", 100_000), ("empty.bin", 0)]:
        (root / name).write_bytes(os.urandom(size))
    for i in range(6):
        (root / f"many{i}.bin").write_bytes(os.urandom(300_000 + i))
    return root


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def origin(nginx: Callable[..., Nginx], www: Path) -> Nginx:
    return nginx(www)
