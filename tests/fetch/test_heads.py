"""An unfinished block kept by an interrupt (recorder.unfinished_blocks, Task.block_head).

The checkpoint records a chunk that ends inside a 1 MiB block (what an interrupt keeps
of a running chunk); the resume asks the server only for the rest of that block and
checks the block whole, its kept bytes read back into the hash. If the kept bytes are
wrong (here: they still match their xxh3, so only the block digest can tell), the block
fails and is fetched again from its start: the file ends verified either way.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import blake3

from accel.fetch import Expected, adownload
from accel.fetch.checkpoint import Checkpoint, DoneChunk, save_checkpoint, xxh3_of_range
from accel.schema import ChunkDigests
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

MiB = 1024 * 1024
KEPT = MiB + MiB // 2  # one whole block and half of the next


async def _run(origin: Nginx, www: Path, dest: Path, *, corrupt: bool) -> int:
    data = (www / "big.bin").read_bytes()
    part = dest.with_name(dest.name + ".part")
    head = bytearray(data[:KEPT])
    if corrupt:
        head[KEPT - 10] ^= 0xFF
    part.write_bytes(bytes(head) + bytes(len(data) - KEPT))
    url = origin.file_url("big.bin")
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        etag, last_modified = r.headers["ETag"], r.headers["Last-Modified"]
    fd = os.open(part, os.O_RDONLY)
    try:
        chunk = DoneChunk(0, KEPT, xxh3_of_range(fd, 0, KEPT))
    finally:
        os.close(fd)
    save_checkpoint(dest, Checkpoint(url, len(data), etag, last_modified, [chunk]))
    digests = [blake3.blake3(data[i : i + MiB]).hexdigest() for i in range(0, len(data), MiB)]
    expected = Expected(
        size=len(data),
        sha256=sha256_of(www / "big.bin"),
        chunks=ChunkDigests(size=MiB, digests=digests),
    )
    sent = origin.bytes_sent()
    # One connection: no split of a slow tail, so every byte sent is one asked for.
    result = await adownload(url, dest, expected=expected, chunk_size=4 * MiB, connections=1)
    assert result.sha256 == sha256_of(www / "big.bin")
    assert sha256_of(dest) == result.sha256
    return origin.bytes_sent() - sent


async def test_an_unfinished_block_is_not_fetched_again(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    size = (www / "big.bin").stat().st_size
    sent = await _run(origin, www, tmp_path / "big.bin", corrupt=False)
    # Only what the checkpoint lacks (and headers): not the kept half block again.
    assert sent <= size - KEPT + 16 * 1024


async def test_wrong_kept_bytes_fail_their_block_and_are_fetched_again(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    size = (www / "big.bin").stat().st_size
    sent = await _run(origin, www, tmp_path / "big.bin", corrupt=True)
    assert sent >= size - KEPT + (KEPT - MiB)  # the half block came again
