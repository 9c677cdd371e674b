"""Pure parts of the stores: ``s3://`` URLs, store selection, the hashing reader that
feeds multipart uploads, and the directory store's gc."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.errors import UnsupportedSchemeError, UsageError
from accel.hub.publish import hash_file
from accel.hub.stores import DirectoryStore, open_store
from accel.hub.stores.s3_publish import HashingReader
from accel.hub.stores.s3client import S3Location, parse_s3_url
from tests.support.hub import publish_model


def test_s3_urls() -> None:
    assert parse_s3_url("s3://b") == S3Location("b", "")
    assert parse_s3_url("s3://b/") == S3Location("b", "")
    assert parse_s3_url("s3://b/a/c/") == S3Location("b", "a/c/")
    assert parse_s3_url("s3://b/a").key("models", "m", "model.json") == "a/models/m/model.json"
    assert parse_s3_url("s3://b/a").url == "s3://b/a"
    for bad in ("s3://", "s3:///x", "s3://b/a//c", "s3://b/../c", "s3://b?x=1", "http://b"):
        with pytest.raises(UsageError):
            parse_s3_url(bad)


def test_open_store_picks_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), DirectoryStore)
    assert open_store("s3://bucket/p", state_dir=tmp_path).description == "s3://bucket/p"
    with pytest.raises(UnsupportedSchemeError, match="gs:// scheme is not supported"):
        open_store("gs://bucket")
    with pytest.raises(UsageError, match="storage-mode"):
        open_store("s3://bucket", storage_mode="sideways")
    with pytest.raises(UsageError, match="presign-ttl"):
        open_store("s3://bucket", presign_ttl=0)


class _Chunky(io.RawIOBase):
    """Returns at most the next planned size per read (as a socket or a pipe may)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._pos, self._sizes = data, 0, sizes

    def read(self, n: int = -1) -> bytes:
        cap = self._sizes.pop(0) if self._sizes else len(self._data)
        n = len(self._data) - self._pos if n < 0 else n
        out = self._data[self._pos : self._pos + min(n, cap)]
        self._pos += len(out)
        return out


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    block=st.integers(1, 700),
    reads=st.lists(st.integers(1, 900), max_size=40),
)
def test_hashing_reader_matches_hash_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, block: int, reads: list[int]
) -> None:
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(data)
    reader = HashingReader(_Chunky(data, list(reads)), block)
    got = b""
    for n in [*reads, 10**6]:
        piece = reader.read(n)
        got += piece
    while piece := reader.read(4096):
        got += piece
    assert got == data
    assert reader.finish() == hash_file(path, block)


def test_directory_gc_removes_only_old_staging_dirs(tmp_path: Path) -> None:
    publish_model(tmp_path, "m", "1.0", {"a": 10})
    old = tmp_path / "models/m/.staging-2.0-dead"
    (old / "files").mkdir(parents=True)
    (old / "files/a").write_bytes(b"x" * 7)
    young = tmp_path / "models/m/.staging-3.0-live"
    young.mkdir()
    past = time.time() - 7200
    os.utime(old, (past, past))
    store = DirectoryStore(tmp_path)
    dry = store.gc()
    assert dry.orphans == ["models/m/.staging-2.0-dead"] and dry.orphan_bytes == 7
    assert old.exists() and not dry.removed
    real = store.gc(dry_run=False)
    assert real.removed and not old.exists() and young.exists()
    assert (tmp_path / "models/m/1.0/manifest.json").exists()
