"""accel/fetch/repair.py: a wrong SHA256 with no block digests is repaired, not refetched.

Through a real nginx behind the fault proxy, which flips or shifts bytes of chosen
answers silently (status, headers and length stay right). The policy itself is tested
as a value in test_consensus.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accel.errors import IntegrityError
from accel.fetch import Engine, Expected, ProgressEvent
from accel.fetch.checkpoint import checkpoint_path, load_checkpoint, part_path, revalidate
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.nginx import Nginx

BLOCK = 256 * 1024
SIZE = 8 * BLOCK + 777  # 9 chunks of BLOCK, the last one short


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repair")
    (root / "f.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture
def proxied(nginx: Callable[..., Nginx], data_dir: Path) -> Iterator[Callable[..., FaultProxy]]:
    origin = nginx(data_dir)
    proxies: list[FaultProxy] = []

    def make(*rules: FaultRule) -> FaultProxy:
        p = FaultProxy(origin.url, list(rules)).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.stop()


def sha_only(data: bytes) -> Expected:
    """What ``accel get --sha256 H`` knows: no manifest, no block digests."""
    return Expected(size=len(data), sha256=hashlib.sha256(data).hexdigest())


async def fetch(
    proxy: FaultProxy, dest: Path, data: bytes, *, chunk_size: int = BLOCK
) -> tuple[object, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    async with Engine(workers=1, connections=3, backoff_base=0.05) as e:
        result = await e.download(
            f"{proxy.url}/f.bin",
            dest,
            expected=sha_only(data),
            chunk_size=chunk_size,
            progress=events.append,
        )
    return result, events


def starts(proxy: FaultProxy) -> list[int]:
    """The first byte of every Range request the proxy saw."""
    out = []
    for r in proxy.snapshot().records:
        assert r.range is not None
        out.append(int(r.range.removeprefix("bytes=").split("-")[0]))
    return out


@pytest.mark.parametrize("kind", [FaultKind.FLIP, FaultKind.SHIFT])
async def test_a_silently_corrupted_chunk_is_found_and_repaired(
    kind: FaultKind, proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(kind, range_start=5 * BLOCK, after_bytes=1000))
    result, events = await fetch(proxy, tmp_path / "f.bin", data)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert proxy.faults == {kind.value: 1}
    messages = [e.message for e in events if e.kind == "chunk_retry"]
    assert any("SHA256 mismatch" in m for m in messages), messages
    assert any(m.startswith("repaired:") for m in messages), messages
    assert [e.kind for e in events][-2:] == ["verified", "done"]
    # Only what finding the bad chunk took: never a second whole download.
    assert proxy.client_body_bytes <= 2 * SIZE
    assert result.bytes_fetched == proxy.client_body_bytes  # type: ignore[attr-defined]
    assert not checkpoint_path(tmp_path / "f.bin").exists()


async def test_two_fetches_that_disagree_get_a_third(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(
        FaultRule(FaultKind.FLIP, range_start=2 * BLOCK, after_bytes=5),  # the download's
        # chunk 1 is written right (a zero-second stall uses up the first match) and its
        # first refetch is corrupt: the two answers for chunk 1 disagree
        FaultRule(FaultKind.STALL_HEADERS, range_start=BLOCK, stall_s=0.0),
        FaultRule(FaultKind.FLIP, range_start=BLOCK, after_bytes=9),
    )
    result, events = await fetch(proxy, tmp_path / "f.bin", data)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert proxy.faults["flip"] == 2
    assert starts(proxy).count(BLOCK) == 3  # written, disagreed, settled
    assert any("two answers disagree" in e.message for e in events)
    assert result.bytes_fetched <= 2.5 * SIZE  # type: ignore[attr-defined]


async def test_a_file_fetched_in_one_request_is_repaired_piece_by_piece(
    nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    # No chunk records: the whole-file request's bytes are cut into 1 MiB pieces.
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 10)
    (www / "f.bin").write_bytes(data)
    origin = nginx(www)
    rule = FaultRule(FaultKind.FLIP, range_start=0, after_bytes=2 * 1024 * 1024 + 3)
    with FaultProxy(origin.url, [rule]) as proxy:
        result, _ = await fetch(proxy, tmp_path / "f.bin", data, chunk_size=len(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert proxy.faults == {"flip": 1}
    assert result.bytes_fetched <= 2 * len(data)  # type: ignore[attr-defined]


async def test_an_origin_that_always_sends_the_same_wrong_bytes_fails_once_clearly(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.FLIP, range_start=3 * BLOCK, after_bytes=7, times=None))
    with pytest.raises(IntegrityError) as info:
        await fetch(proxy, tmp_path / "f.bin", data)
    assert "consistently" in str(info.value) and "/f.bin" in str(info.value)
    assert not getattr(info.value, "resumable", False)
    assert proxy.client_body_bytes <= 2.5 * SIZE  # one pass of checks, then it stops
    assert not (tmp_path / "f.bin").exists()
    assert not part_path(tmp_path / "f.bin").exists()  # nothing a rerun could use


async def test_no_consensus_keeps_the_part_and_the_rerun_repairs_from_there(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    """Every answer for chunk 4 is corrupt in a new way: the repair gives up with the
    .part and checkpoint kept (today's code deleted both); once the origin heals, the
    rerun repairs what it has, within the same budget."""
    data = (data_dir / "f.bin").read_bytes()
    dest = tmp_path / "f.bin"
    proxy = proxied(
        *(FaultRule(FaultKind.FLIP, range_start=4 * BLOCK, after_bytes=10 + i) for i in range(9))
    )
    with pytest.raises(IntegrityError) as info:
        await fetch(proxy, dest, data)
    assert getattr(info.value, "resumable", False)
    assert "never got two agreeing answers" in str(info.value)
    assert starts(proxy).count(4 * BLOCK) == 5  # MAX_VOTES answers, all different
    assert part_path(dest).exists()
    cp = load_checkpoint(dest)
    assert cp is not None and sum(c.end - c.start for c in cp.chunks) == SIZE
    proxy.set_rules([])
    proxy.reset_stats()
    await fetch(proxy, dest, data)
    assert dest.read_bytes() == data
    assert proxy.client_body_bytes <= 1.5 * SIZE


async def test_a_repair_cancelled_midway_leaves_what_a_rerun_can_trust(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    dest = tmp_path / "f.bin"
    proxy = proxied(
        FaultRule(FaultKind.SHIFT, range_start=5 * BLOCK, after_bytes=50),
        FaultRule(FaultKind.STALL_HEADERS, range_start=0, stall_s=0.0),  # the probe
        FaultRule(FaultKind.STALL_HEADERS, range_start=0, stall_s=60.0),  # its refetch
    )
    repairing = asyncio.Event()

    def progress(ev: ProgressEvent) -> None:
        if ev.message.startswith("SHA256 mismatch"):
            repairing.set()

    async with Engine(workers=1, connections=3, backoff_base=0.05) as e:
        run = asyncio.ensure_future(
            e.download(
                f"{proxy.url}/f.bin",
                dest,
                expected=sha_only(data),
                chunk_size=BLOCK,
                progress=progress,
            )
        )
        await asyncio.wait_for(repairing.wait(), 20)
        deadline = time.monotonic() + 20
        while starts(proxy).count(0) < 2:  # the refetch of piece 0 is stalled
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    cp = load_checkpoint(dest)
    assert cp is not None and part_path(dest).exists()
    # The pieces in flight may be half rewritten; every other one is recorded as it is.
    trusted = revalidate(dest, cp)
    assert sum(c.end - c.start for c in trusted) >= SIZE - 4 * BLOCK
    proxy.set_rules([])
    await fetch(proxy, dest, data)
    assert dest.read_bytes() == data


def test_accel_get_with_sha256_through_a_corrupting_origin(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.SHIFT, range_start=6 * BLOCK, after_bytes=100))
    want = hashlib.sha256(data).hexdigest()
    out = tmp_path / "f.bin"
    r = subprocess.run(
        [sys.executable, "-m", "accel", "get", f"{proxy.url}/f.bin", "-o", str(out),
         "--sha256", want, "--chunk-size", "256K", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    assert proxy.faults == {"shift": 1}
