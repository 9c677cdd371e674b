"""Faults injected for real by tests/support/faultproxy.py in front of a real nginx.

Each test names the fault it injects; none may end in a "success" with wrong bytes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from accel.errors import IntegrityError, RemoteChangedError, StallError
from accel.fetch import Engine, Expected, ProgressEvent
from accel.fetch.checkpoint import part_path
from accel.schema import ChunkDigests
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.nginx import Nginx

BLOCK = 256 * 1024
SIZE = 8 * BLOCK + 1234  # the last block is short

#: faults of one answer that a retry of the same bytes gets past
BODY_FAULTS = [
    FaultKind.RESET,
    FaultKind.TRUNCATE,
    FaultKind.TRUNCATE_NOLEN,
    FaultKind.FLIP,
    FaultKind.WRONG_RANGE,
    FaultKind.IGNORE_RANGE,
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    (root / "f.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture
def proxied(nginx: Callable[..., Nginx], data_dir: Path) -> Callable[..., FaultProxy]:
    origin = nginx(data_dir)
    proxies: list[FaultProxy] = []

    def make(*rules: FaultRule, **options: object) -> FaultProxy:
        p = FaultProxy(origin.url, list(rules), **options)  # type: ignore[arg-type]
        p.start()
        proxies.append(p)
        return p

    yield make  # type: ignore[misc]
    for p in proxies:
        p.stop()


def expected_for(data: bytes, *, blocks: bool = True) -> Expected:
    chunks = None
    if blocks:
        digests = [
            blake3.blake3(data[i : i + BLOCK]).hexdigest() for i in range(0, len(data), BLOCK)
        ]
        chunks = ChunkDigests(size=BLOCK, digests=digests)
    return Expected(size=len(data), sha256=hashlib.sha256(data).hexdigest(), chunks=chunks)


async def fetch(
    proxy: FaultProxy,
    dest: Path,
    data: bytes,
    *,
    blocks: bool = True,
    chunk_size: int = BLOCK,
    **engine: object,
) -> tuple[object, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    options: dict[str, object] = {"workers": 1, "connections": 3, "backoff_base": 0.05}
    options.update(engine)
    async with Engine(**options) as e:  # type: ignore[arg-type]
        result = await e.download(
            f"{proxy.url}/f.bin",
            dest,
            expected=expected_for(data, blocks=blocks),
            chunk_size=chunk_size,
            progress=events.append,
        )
    return result, events


@pytest.mark.parametrize("kind", BODY_FAULTS)
async def test_a_faulty_chunk_is_refetched(
    kind: FaultKind, proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(kind, range_start=3 * BLOCK))
    result, events = await fetch(proxy, tmp_path / "f.bin", data)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert proxy.faults == {kind.value: 1}
    assert result.retries == 1  # type: ignore[attr-defined]
    assert [e for e in events if e.kind == "chunk_retry"]
    committed = [e.committed for e in events]
    assert committed == sorted(committed)


@pytest.mark.parametrize("kind", BODY_FAULTS)
async def test_a_fault_in_a_one_request_file_falls_back_to_ranges(
    kind: FaultKind, proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    # The file fits one request, so it takes the whole-file path (the worker streams,
    # checks blocks and hashes it alone); the fault sends it back to the ranged path.
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(kind, range_start=0))
    result, events = await fetch(proxy, tmp_path / "f.bin", data, chunk_size=2 * SIZE)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert proxy.faults == {kind.value: 1}
    assert result.retries == 1  # type: ignore[attr-defined]
    retries = [e.message for e in events if e.kind == "chunk_retry"]
    assert retries
    if kind is FaultKind.FLIP:
        # the one request is checked by the file's SHA256 alone (no blake3 blocks in
        # the worker); the ranged path then finds and refetches the bad block
        assert "SHA256" in retries[0] and "not the expected one" in retries[0]
    committed = [e.committed for e in events]
    assert committed == sorted(committed) and committed[-1] == SIZE


async def test_flipped_byte_without_block_digests_fails_the_sha256(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    # Every answer for those bytes has the same flip: the repair (tests/fetch/test_repair.py)
    # finds every chunk agreeing with its refetch, so the wrong SHA256 stands.
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.FLIP, range_start=2 * BLOCK, after_bytes=99, times=None))
    with pytest.raises(IntegrityError):
        await fetch(proxy, tmp_path / "f.bin", data, blocks=False)
    assert not (tmp_path / "f.bin").exists()
    assert not part_path(tmp_path / "f.bin").exists()  # rerun starts clean


async def test_a_file_fetched_in_one_request_is_hashed_by_the_worker_and_still_checked(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    # One request covers the whole file, so the worker computes its SHA256 while it
    # streams (the supervisor never reads it back): a flipped byte must still be caught
    # (and repaired, see test_repair.py), and a clean copy must carry the right digest.
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.FLIP, range_start=0))
    _, events = await fetch(proxy, tmp_path / "f.bin", data, blocks=False, chunk_size=2 * SIZE)
    assert proxy.faults == {"flip": 1}
    assert any("SHA256 mismatch" in e.message for e in events)
    assert (tmp_path / "f.bin").read_bytes() == data
    (tmp_path / "f.bin").unlink()
    result, _ = await fetch(proxy, tmp_path / "f.bin", data, blocks=False, chunk_size=2 * SIZE)
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert result.retries == 0  # type: ignore[attr-defined]
    assert (tmp_path / "f.bin").read_bytes() == data


async def test_corrupt_source_is_declared_after_retries(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.FLIP, range_start=BLOCK, times=None))
    with pytest.raises(IntegrityError):
        await fetch(proxy, tmp_path / "f.bin", data, max_attempts=3)
    assert proxy.faults == {"flip": 3}
    assert not (tmp_path / "f.bin").exists()


async def test_503_retry_after_is_honoured(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.STATUS_503, range_start=4 * BLOCK, retry_after="1"))
    t0 = time.monotonic()
    await fetch(proxy, tmp_path / "f.bin", data)
    assert time.monotonic() - t0 >= 1.0
    assert (tmp_path / "f.bin").read_bytes() == data


async def test_stalled_body_is_dropped_and_requeued(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.STALL_BODY, range_start=5 * BLOCK, stall_s=30))
    t0 = time.monotonic()
    result, _ = await fetch(proxy, tmp_path / "f.bin", data, stall_timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.retries == 1  # type: ignore[attr-defined]


async def test_trickling_server_is_a_stall(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(trickle_bps=2000)
    with pytest.raises(StallError):
        await fetch(
            proxy, tmp_path / "f.bin", data, stall_timeout=0.5, min_rate=20_000, max_attempts=2
        )


async def test_file_changed_mid_download_is_never_mixed(
    proxied: Callable[..., FaultProxy], data_dir: Path, tmp_path: Path
) -> None:
    data = (data_dir / "f.bin").read_bytes()
    proxy = proxied(FaultRule(FaultKind.NEW_VERSION, from_nth=3, times=None))
    with pytest.raises(RemoteChangedError):
        await fetch(proxy, tmp_path / "f.bin", data)
    assert not (tmp_path / "f.bin").exists()
