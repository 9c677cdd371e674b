"""Checkpoint round trips, torn files, re-validation and the remote-changed rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from accel.errors import CheckpointError
from accel.fetch.checkpoint import (
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    part_path,
    revalidate,
    save_checkpoint,
)


def make(tmp_path: Path) -> tuple[Path, bytes, Checkpoint]:
    dest = tmp_path / "f.bin"
    data = os.urandom(3000)
    part_path(dest).write_bytes(data)
    chunks = [
        DoneChunk(start=s, end=e, xxh3=xxhash.xxh3_128(data[s:e]).hexdigest())
        for s, e in [(0, 1000), (2000, 3000)]
    ]
    cp = Checkpoint(url="http://x/f.bin", size=3000, etag='"abc"', chunks=chunks)
    return dest, data, cp


def test_round_trip(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    assert load_checkpoint(dest) == cp
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("cut", [1, 20, -5])
def test_torn_checkpoint_is_refused(tmp_path: Path, cut: int) -> None:
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    raw = checkpoint_path(dest).read_bytes()
    checkpoint_path(dest).write_bytes(raw[:cut])
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


def test_chunk_outside_the_file_is_refused(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    cp.chunks.append(DoneChunk(start=2500, end=4000, xxh3="00"))
    save_checkpoint(dest, cp)
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


def test_revalidate_drops_chunks_whose_bytes_changed(tmp_path: Path) -> None:
    dest, data, cp = make(tmp_path)
    assert revalidate(dest, cp) == cp.chunks
    with open(part_path(dest), "r+b") as f:
        f.seek(2500)
        f.write(bytes([data[2500] ^ 1]))
    assert revalidate(dest, cp) == cp.chunks[:1]


def test_revalidate_without_part_file_keeps_nothing(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    part_path(dest).unlink()
    assert revalidate(dest, cp) == []


def test_same_remote_rules() -> None:
    cp = Checkpoint(url="u", size=10, etag='"a"', last_modified="Mon")
    assert cp.same_remote(10, '"a"', "Mon")
    assert not cp.same_remote(11, '"a"', "Mon")
    assert not cp.same_remote(10, '"b"', "Mon")
    assert not Checkpoint(url="u", size=10, last_modified="Mon").same_remote(10, None, "Tue")
    assert Checkpoint(url="u", size=10).same_remote(10, None, None)
    assert not Checkpoint(url="u", size=10).same_remote(10, '"a"', None)
