"""The resume checkpoint on a real full disk (a small tmpfs filled to ENOSPC).

Once the checkpoint file exists, saves overwrite blocks it already owns, so they go on
succeeding when no block is free (they failed with ENOSPC when each save was a new temp
file); only a growth of the file needs space, and when it fails the old file is kept.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import xxhash

from accel.fetch.checkpoint import (
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from tests.reliability.tmpfs import fill, require_root, tmpfs

pytestmark = pytest.mark.root
CHUNK = 1 << 20


def progress(n: int) -> Checkpoint:
    """A 64 MiB download with its first ``n`` chunks done."""
    chunks = [
        DoneChunk(i * CHUNK, (i + 1) * CHUNK, xxhash.xxh3_128(b"%d" % i).hexdigest())
        for i in range(n)
    ]
    return Checkpoint(url="http://127.0.0.1/f.bin", size=64 * CHUNK, etag='"e"', chunks=chunks)


def assert_full(where: Path) -> None:
    """The tmpfs really refuses one more byte."""
    with pytest.raises(OSError) as info, open(where / "one-more.bin", "wb") as f:
        f.write(b"x" * 8192)
        f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC


def test_saves_on_a_full_disk_succeed_and_a_reload_returns_the_newest(tmp_path: Path) -> None:
    require_root()
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        dest = mnt / "f.bin"
        save_checkpoint(dest, progress(1))
        fill(mnt)
        assert_full(mnt)
        for n in range(2, 65):
            save_checkpoint(dest, progress(n))
        assert load_checkpoint(dest) == progress(64)
        assert not list(mnt.glob(".*.tmp"))


def test_a_growth_on_a_full_disk_fails_and_keeps_the_checkpoint_before_it(
    tmp_path: Path,
) -> None:
    require_root()
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        dest = mnt / "f.bin"
        save_checkpoint(dest, progress(3))
        raw = checkpoint_path(dest).read_bytes()
        fill(mnt)
        assert_full(mnt)
        # A URL far longer than the slot was sized for: the file would have to grow.
        huge = progress(4)
        huge.url = "http://127.0.0.1/" + "x" * len(raw)
        with pytest.raises(OSError) as info:
            save_checkpoint(dest, huge)
        assert info.value.errno == errno.ENOSPC
        assert checkpoint_path(dest).read_bytes() == raw
        assert load_checkpoint(dest) == progress(3)
        assert not list(mnt.glob(".*.tmp"))  # the failed temp file is gone
        save_checkpoint(dest, progress(5))  # and in-place saves go on
        assert load_checkpoint(dest) == progress(5)
