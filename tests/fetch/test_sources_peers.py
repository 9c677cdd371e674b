"""Partial sources in the engine, for real: nginx as the hub (the last resort) and a peer
holding some blocks of the file (tests/support/partialpeer.py: the node listener's
protocol, ``?have`` and ``404 block_not_held``, with the blocks it holds under the
test's control). Each test names what the peer does; every download ends verified and
no chunk is asked of a peer for a block its bitmap did not list.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from accel.fetch import Engine, ProgressEvent
from accel.fetch.types import DownloadResult
from tests.fetch.test_sources_mirrors import expected_for
from tests.support.nginx import Nginx
from tests.support.partialpeer import PartialPeer

MiB = 1 << 20
BLOCK = 256 * 1024
SIZE = 8 * MiB + 1234  # 33 blocks, the last one short
NBLOCKS = -(-SIZE // BLOCK)


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def origin(nginx: Callable[..., Nginx], tmp_path: Path, data: bytes) -> Nginx:
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(data)
    return nginx(www)


async def fetch(
    url: str,
    peers: list[str],
    dest: Path,
    data: bytes,
    *,
    peer_headers: dict[str, str] | None = None,
    events: list[ProgressEvent] | None = None,
    headers: dict[str, str] | None = None,
    seed: int = 1,
) -> DownloadResult:
    seen = events if events is not None else []
    async with Engine(workers=2, connections=6, backoff_base=0.05) as e:
        return await e.download(
            url,
            dest,
            expected=expected_for(data, block=BLOCK),
            chunk_size=MiB,
            progress=seen.append,
            peers=peers,
            peer_headers=peer_headers,
            headers=headers,
            order_seed=seed,
        )


async def test_a_partial_peer_sends_only_the_blocks_it_holds(
    origin: Nginx, tmp_path: Path, data: bytes
) -> None:
    """Fault: none; the peer holds the even blocks. It is asked only for those (never a
    block_not_held), with the fleet token and without the hub's credentials; the hub
    sends the others; verified."""
    with PartialPeer(data, BLOCK, token="fleet", held=set(range(0, NBLOCKS, 2))) as peer:
        result = await fetch(
            origin.file_url("f.bin"), [peer.url], tmp_path / "f", data,
            peer_headers={"Authorization": "Bearer fleet"},
            headers={"Cookie": "hub-session=1"},
        )  # fmt: skip
        assert result.verified and (tmp_path / "f").read_bytes() == data
        assert peer.unauthorized == 0 and peer.not_held == 0 and peer.have_asks >= 1
        assert peer.cookies == 0
        even = sum(min(BLOCK, SIZE - b * BLOCK) for b in range(0, NBLOCKS, 2))
        assert peer.body_bytes >= even * 0.8, (peer.body_bytes, even)
        assert peer.body_bytes <= even  # nothing it lacks, nothing twice


async def test_a_peer_that_fills_up_is_read_as_it_does(
    origin: Nginx, tmp_path: Path, data: bytes, nginx: Callable[..., Nginx]
) -> None:
    """Fault: none; the peer starts with nothing and gains blocks while the download
    runs (its ``?have`` is asked again every second): the blocks it gains are read
    from it, the hub being slow (1 MB/s)."""
    slow = nginx(origin.root, limit_rate="1m")
    with PartialPeer(data, BLOCK) as peer:

        async def fill() -> None:
            deadline = time.monotonic() + 30
            while peer.have_asks < 1:
                assert time.monotonic() < deadline, "the peer's ?have was never asked"
                await asyncio.sleep(0.02)
            peer.hold(range(NBLOCKS // 2, NBLOCKS))  # the second half, once asked once

        filler = asyncio.ensure_future(fill())
        result = await fetch(slow.file_url("f.bin"), [peer.url], tmp_path / "f", data)
        await filler
        assert result.verified and (tmp_path / "f").read_bytes() == data
        assert peer.have_asks >= 2 and peer.body_bytes >= SIZE // 4, (
            peer.have_asks,
            peer.body_bytes,
        )


async def test_a_peer_whose_bitmap_is_ahead_of_its_disk_is_no_failure(
    origin: Nginx, tmp_path: Path, data: bytes
) -> None:
    """Fault: the peer says it holds every block but holds only the first half: each
    block it lacks is a ``404 block_not_held``, which is no failure (never a quarantine)
    and goes to the hub; the half it has is read from it; verified."""
    events: list[ProgressEvent] = []
    with PartialPeer(
        data, BLOCK, held=set(range(NBLOCKS // 2)), claimed=set(range(NBLOCKS))
    ) as peer:
        result = await fetch(
            origin.file_url("f.bin"), [peer.url], tmp_path / "f", data, events=events
        )
        assert result.verified and (tmp_path / "f").read_bytes() == data
        assert peer.not_held >= 1
        assert not [e for e in events if e.kind == "source_quarantined"]
        fig = next(s for s in result.sources if s.url == peer.url)
        assert not fig.quarantined and fig.bad_blocks == 0
        assert peer.body_bytes >= BLOCK  # still read for what it has


async def test_without_block_digests_peers_are_not_used(
    origin: Nginx, tmp_path: Path, data: bytes
) -> None:
    """Nothing would check a peer's bytes block by block: the peer is not asked."""
    with PartialPeer(data, BLOCK, held=set(range(NBLOCKS))) as peer:
        async with Engine(workers=2, connections=4) as e:
            result = await e.download(
                origin.file_url("f.bin"), tmp_path / "f",
                expected=expected_for(data, blocks=False), peers=[peer.url],
            )  # fmt: skip
        assert result.verified and peer.have_asks == 0 and peer.body_bytes == 0
