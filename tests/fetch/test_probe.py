"""The first request of a resumed download (accel/fetch/probe.py), against real nginx.

An interrupt records the written prefix of every running chunk, so a checkpoint often
has small gaps. The resumed probe must ask for the gap only: while its worker waits
for the supervisor's decision nginx keeps sending, and a whole chunk asked past a
64 KiB gap was mostly thrown away (counted with ``$bytes_sent``).
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from accel.fetch import adownload
from accel.fetch.checkpoint import Checkpoint, DoneChunk, save_checkpoint, xxh3_of_range
from accel.fetch.probe import probe_length
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

MiB = 1024 * 1024
GAP = (MiB, MiB + 64 * 1024)


def test_probe_length_stops_at_the_next_recorded_chunk() -> None:
    cp = Checkpoint(url="u", size=10, chunks=[DoneChunk(0, 2, "a"), DoneChunk(5, 10, "b")])
    assert probe_length(cp, 2, 8) == 3
    assert probe_length(cp, 2, 2) == 2
    assert probe_length(None, 0, 8) == 8
    # ...and at the end of the plan's first chunk (the plan cuts at multiples of 8)
    assert probe_length(Checkpoint(url="u", size=10, chunks=[DoneChunk(0, 2, "a")]), 2, 8) == 6


def test_with_blocks_the_probe_skips_a_head_and_its_continuation() -> None:
    """A kept head ``[0, 3)`` of block 0 and a running chunk that went on from it,
    ``[3, 5)``, both in one checkpoint (blocks of 4): the resume keeps the head and
    nothing of the continuation before block 1, so the probe (which starts at the head's
    end) must reach block 1. From the raw starts it was ``[3, 3)``: nginx answered 416."""
    cp = Checkpoint(url="u", size=16, chunks=[DoneChunk(0, 3, "a"), DoneChunk(3, 5, "b")])
    assert probe_length(cp, 0, 8, 4) == 4
    assert probe_length(cp, 0, 8) == 3  # no blocks: the gap ends at the next record
    # a record inside a block that keeps nothing at all does not end the gap
    cp = Checkpoint(url="u", size=16, chunks=[DoneChunk(0, 3, "a"), DoneChunk(5, 7, "b")])
    assert probe_length(cp, 0, 16, 4) == 16
    # a record starting at a block boundary does
    cp = Checkpoint(url="u", size=16, chunks=[DoneChunk(0, 3, "a"), DoneChunk(8, 12, "b")])
    assert probe_length(cp, 0, 16, 4) == 8


async def test_a_resumed_probe_asks_only_for_the_gap(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    data = (www / "big.bin").read_bytes()
    dest = tmp_path / "big.bin"
    part = dest.with_name("big.bin.part")
    part.write_bytes(data[: GAP[0]] + bytes(GAP[1] - GAP[0]) + data[GAP[1] :])
    with urllib.request.urlopen(
        urllib.request.Request(origin.file_url("big.bin"), method="HEAD")
    ) as r:
        etag, last_modified = r.headers["ETag"], r.headers["Last-Modified"]
    fd = os.open(part, os.O_RDONLY)
    try:
        chunks = [
            DoneChunk(0, GAP[0], xxh3_of_range(fd, 0, GAP[0])),
            DoneChunk(GAP[1], len(data), xxh3_of_range(fd, GAP[1], len(data))),
        ]
    finally:
        os.close(fd)
    cp = Checkpoint(origin.file_url("big.bin"), len(data), etag, last_modified, chunks)
    save_checkpoint(dest, cp)
    sent = origin.bytes_sent()
    result = await adownload(origin.file_url("big.bin"), dest, chunk_size=MiB)
    assert result.sha256 == sha256_of(www / "big.bin")
    assert result.resumed_bytes == len(data) - (GAP[1] - GAP[0])
    assert origin.bytes_sent() - sent <= (GAP[1] - GAP[0]) + 2048
