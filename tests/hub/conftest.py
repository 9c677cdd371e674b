"""Fixtures of the hub tests: one real hub per module over a small store with planted traps.

Traps: a secret file next to the store (``SECRET``), a file on disk inside a version's
``files`` dir that its manifest does not list, a symlink inside the store that points at
the secret, and a listed file replaced by such a symlink (in demo-mt).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import RunningHub, publish_model, publish_small_store, running_hub
from tests.support.postgres import pg_url, postgres
from tests.support.s3 import s3_bucket, s3_server

# The S3 gateway (a one-node Ceph, ~14 s to start) and PostgreSQL are session fixtures:
# defined here, once, they start at most once per run. Imported into each test module
# instead, each module had its own copy of the fixture and started its own server.
__all__ = ["pg_url", "postgres", "s3_bucket", "s3_server"]

SECRET = b"TOP-SECRET-7f3a9c-do-not-serve"
TOKEN = "s3cr3t-token-for-tests"


def plant_traps(base: Path, root: Path) -> Path:
    """Plant the secret outside the store and traps inside it; returns the secret's path."""
    secret = base / "secret.txt"
    secret.write_bytes(SECRET * 10)
    files = root / "models/demo-asr/1.0.0/files"
    (files / "unlisted.bin").write_bytes(SECRET)
    (files / "leak").symlink_to(secret)
    (root / "models" / "secret.txt").write_bytes(SECRET)
    (root / "models/demo-asr/1.0.0/secret.txt").write_bytes(SECRET)
    # A listed file replaced by a symlink that leaves the store.
    listed = root / "models/demo-mt/1.0.0/files/shards/part-00.bin"
    listed.unlink()
    listed.symlink_to(secret)
    os.symlink(secret, root / "models/demo-asr/1.0.0/files/sub/escape.txt")
    # A listed file whose directory was swapped for a symlink to a dir outside the store.
    publish_model(root, "trap", "1.0", {"d/f.bin": 100}, task="trap", languages=())
    outside = base / "outside"
    outside.mkdir()
    (outside / "f.bin").write_bytes(SECRET)
    shutil.rmtree(root / "models/trap/1.0/files/d")
    (root / "models/trap/1.0/files/d").symlink_to(outside)
    return secret


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub without auth over the small store plus traps (shared by a test module)."""
    base = tmp_path_factory.mktemp("hub")
    root = base / "store"
    publish_small_store(root)
    plant_traps(base, root)
    with running_hub(root) as h:
        yield h


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub with ``--token TOKEN`` over the small store."""
    root = tmp_path_factory.mktemp("hub-auth") / "store"
    publish_small_store(root)
    with running_hub(root, token=TOKEN) as h:
        yield h
