"""Several sources for one file, for real: nginx mirrors on loopback, and
tests/support/faultproxy.py in front of them for a lying one; one killed mid-download,
one without the file, one 10x slower. Each test names the source fault it injects; none
may end in a "success" with wrong bytes, and none may fail while the first URL answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from accel.fetch import Engine, Expected, ProgressEvent
from accel.fetch.sources_race import TailRace
from accel.fetch.types import DownloadResult
from accel.schema import ChunkDigests
from tests.fetch.test_redirect import chain  # noqa: F401 (a fixture: signed redirects)
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.nginx import Nginx

MiB = 1 << 20
BLOCK = 256 * 1024
SIZE = 16 * MiB + 4321  # the last block is short


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirrored")
    (root / "f.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture
def proxy() -> Iterator[Callable[..., FaultProxy]]:
    started: list[FaultProxy] = []

    def make(upstream: str, *rules: FaultRule, **options: object) -> FaultProxy:
        p = FaultProxy(upstream, list(rules), **options)  # type: ignore[arg-type]
        p.start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def expected_for(data: bytes, *, blocks: bool = True, block: int = BLOCK) -> Expected:
    chunks = None
    if blocks:
        digests = [
            blake3.blake3(data[i : i + block]).hexdigest() for i in range(0, len(data), block)
        ]
        chunks = ChunkDigests(size=block, digests=digests)
    return Expected(size=len(data), sha256=hashlib.sha256(data).hexdigest(), chunks=chunks)


async def fetch(
    url: str,
    mirrors: list[str],
    dest: Path,
    data: bytes,
    *,
    blocks: bool = True,
    events: list[ProgressEvent] | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    per_source: int = 16,
    block: int = BLOCK,
    **engine: object,
) -> DownloadResult:
    seen = events if events is not None else []

    def progress(ev: ProgressEvent) -> None:
        seen.append(ev)
        if on_event is not None:
            on_event(ev)

    options: dict[str, object] = {"workers": 2, "connections": 6, "backoff_base": 0.05}
    options.update(engine)
    async with Engine(**options) as e:  # type: ignore[arg-type]
        return await e.download(
            url,
            dest,
            expected=expected_for(data, blocks=blocks, block=block),
            chunk_size=max(MiB, block),
            progress=progress,
            mirrors=mirrors,
            max_connections_per_source=per_source,
        )


def figures(result: DownloadResult, url: str) -> object:
    return next(s for s in result.sources if s.url == url)


async def test_two_mirrors_share_the_bytes(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    a, b = nginx(files), nginx(files)
    data = (files / "f.bin").read_bytes()
    result = await fetch(a.file_url("f.bin"), [b.file_url("f.bin")], tmp_path / "f", data)
    assert result.verified and (tmp_path / "f").read_bytes() == data
    assert [s.url for s in result.sources] == [a.file_url("f.bin"), b.file_url("f.bin")]
    assert all(s.bytes > 0 and s.chunks > 0 for s in result.sources), result.sources
    # what each nginx really sent (headers included) covers the file, near enough once
    assert a.bytes_sent() > 0 and b.bytes_sent() > 0
    assert a.bytes_sent() + b.bytes_sent() < SIZE + 2 * MiB


async def test_a_lying_mirror_is_quarantined_and_sends_little(
    nginx: Callable[..., Nginx],
    proxy: Callable[..., FaultProxy],
    files: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault: a mirror that flips one byte of every answer (status, headers, length
    right). Its blocks fail their blake3 digests: demoted, then quarantined. The honest
    sources are capped at two connections each, and the liar answers from an uncapped
    nginx: demoted (its rate quartered) it is still faster per connection than a
    quarter of the honest ones, so it gets the second chunk that quarantines it. (It
    once proxied a capped honest nginx: quartered, its rate sat right at MIN_SHARE of the
    best, and under load it got no second chunk: demoted, never quarantined.)"""
    hub, honest = nginx(files, limit_rate="8m"), nginx(files, limit_rate="8m")
    liar = proxy(nginx(files).url, FaultRule(FaultKind.FLIP, times=None, after_bytes=1000))
    data = (files / "f.bin").read_bytes()
    events: list[ProgressEvent] = []
    liar_url = f"{liar.url}/f.bin"
    with caplog.at_level(logging.WARNING, logger="accel.fetch"):
        result = await fetch(
            hub.file_url("f.bin"),
            [liar_url, honest.file_url("f.bin")],
            tmp_path / "f",
            data,
            events=events,
            per_source=2,
        )
    assert result.verified and (tmp_path / "f").read_bytes() == data
    quarantined = [e for e in events if e.kind == "source_quarantined"]
    assert len(quarantined) == 1 and liar_url in quarantined[0].message
    assert "block ending at byte" in quarantined[0].message
    assert any(liar_url in r.getMessage() and "block" in r.getMessage() for r in caplog.records)
    lf = figures(result, liar_url)
    # after its first bad block it had one request at a time: the second one ended it
    assert lf.quarantined and lf.bad_blocks == 2  # type: ignore[attr-defined]
    # two chunks' worth at most (the measuring chunk and one more), never the file
    assert liar.client_body_bytes < 4 * MiB, liar.client_body_bytes


async def test_a_mirror_killed_mid_download_costs_retries_not_the_download(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    """Fault: the mirror's nginx is stopped while chunks of it are running."""
    hub = nginx(files, limit_rate="4m")
    mirror = nginx(files, limit_rate="4m")
    data = (files / "f.bin").read_bytes()
    mirror_url = mirror.file_url("f.bin")
    killed = threading.Event()

    def kill_when_busy(ev: ProgressEvent) -> None:
        m = next((s for s in ev.sources if s.url == mirror_url), None)
        if not killed.is_set() and m is not None and m.active > 0 and m.chunks >= 1:
            killed.set()
            threading.Thread(target=mirror.stop).start()

    result = await fetch(
        hub.file_url("f.bin"), [mirror_url], tmp_path / "f", data, on_event=kill_when_busy
    )
    assert killed.is_set(), "the mirror was never busy: nothing was tested"
    assert result.verified and (tmp_path / "f").read_bytes() == data
    mf = figures(result, mirror_url)
    assert mf.errors >= 1 and mf.chunks >= 1  # type: ignore[attr-defined]


async def test_a_mirror_without_the_file_is_quarantined(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    """Fault: the mirror answers 404 (it never got the file)."""
    hub, empty = nginx(files), nginx(tmp_path)
    data = (files / "f.bin").read_bytes()
    events: list[ProgressEvent] = []
    missing = empty.file_url("f.bin")
    result = await fetch(hub.file_url("f.bin"), [missing], tmp_path / "f", data, events=events)
    assert result.verified and (tmp_path / "f").read_bytes() == data
    assert figures(result, missing).quarantined  # type: ignore[attr-defined]
    assert any(e.kind == "source_quarantined" and missing in e.message for e in events)


async def test_a_slow_mirror_does_not_become_the_tail(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    """Fault: one mirror at 256 KiB/s per connection. It gets its measuring chunk; the
    rest goes to the fast source, and the slow chunk is raced there (first verified
    bytes win), so the download does not wait for it."""
    fast = nginx(files)
    slow = nginx(files, limit_rate="256k")
    data = (files / "f.bin").read_bytes()
    events: list[ProgressEvent] = []
    result = await fetch(
        fast.file_url("f.bin"), [slow.file_url("f.bin")], tmp_path / "f", data, events=events
    )
    assert result.verified and (tmp_path / "f").read_bytes() == data
    sf = figures(result, slow.file_url("f.bin"))
    # its measuring chunk alone (2 MiB at most) would take 8 s at 256 KiB/s
    assert result.elapsed_s < 6.0, (result.elapsed_s, result.sources)
    assert sf.bytes < 3 * MiB  # type: ignore[attr-defined]
    assert not (tmp_path / "f.part.race").exists()


async def test_without_block_digests_the_repair_votes_out_the_lying_mirror(
    nginx: Callable[..., Nginx],
    proxy: Callable[..., FaultProxy],
    files: Path,
    tmp_path: Path,
) -> None:
    """Fault: a mirror flipping a byte of every answer, and only a SHA256 to check
    against. The wrong SHA256 starts the repair; pieces are refetched from other
    sources, and the mirror whose answers lose the votes is the one quarantined."""
    hub, honest = nginx(files), nginx(files)
    liar = proxy(honest.url, FaultRule(FaultKind.FLIP, times=None, after_bytes=1000))
    data = (files / "f.bin").read_bytes()
    events: list[ProgressEvent] = []
    liar_url = f"{liar.url}/f.bin"
    result = await fetch(
        hub.file_url("f.bin"),
        [liar_url, honest.file_url("f.bin")],
        tmp_path / "f",
        data,
        blocks=False,
        events=events,
    )
    assert result.verified and (tmp_path / "f").read_bytes() == data
    lf = figures(result, liar_url)
    assert lf.bad_blocks >= 1  # type: ignore[attr-defined]
    if lf.bad_blocks >= 2:  # type: ignore[attr-defined]
        assert lf.quarantined  # type: ignore[attr-defined]
        assert any(e.kind == "source_quarantined" and liar_url in e.message for e in events)
    honest_figures = [s for s in result.sources if s.url != liar_url]
    assert all(s.bad_blocks == 0 for s in honest_figures)


async def test_a_slow_one_block_chunk_is_raced_and_the_first_verified_bytes_win(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    """Fault: a mirror at 256 KiB/s per connection, blocks of 4 MiB: its measuring chunk
    is one block (16 s at that rate), which no trim can cut at a block boundary. The
    race fetches it again from the fast source, stops the slow request, and copies
    the verified bytes in."""
    fast = nginx(files)
    slow = nginx(files, limit_rate="256k")
    data = (files / "f.bin").read_bytes()
    events: list[ProgressEvent] = []
    result = await fetch(
        fast.file_url("f.bin"),
        [slow.file_url("f.bin")],
        tmp_path / "f",
        data,
        events=events,
        block=4 * MiB,
    )
    assert result.verified and (tmp_path / "f").read_bytes() == data
    assert any("race" in e.message and "won" in e.message for e in events)
    assert result.elapsed_s < 10.0, result.elapsed_s
    assert not (tmp_path / "f.part.race").exists()


async def test_the_slow_mirrors_trial_chunks_are_raced_at_once(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: a mirror at 256 KiB/s per connection holding its four trial chunks (4 s
    each) while the fast source has idle connections: they are raced together, not
    one after another (each race waited for the one before: the tail was their sum)."""
    fast = nginx(files, limit_rate="2m")
    slow = nginx(files, limit_rate="256k")
    data = (files / "f.bin").read_bytes()
    running: list[int] = []
    most = 0
    race = TailRace._run_race

    async def counted(self: TailRace, r: Any) -> None:
        nonlocal most
        running.append(1)
        most = max(most, len(running))
        try:
            await race(self, r)
        finally:
            running.pop()

    monkeypatch.setattr(TailRace, "_run_race", counted)
    result = await fetch(
        fast.file_url("f.bin"), [slow.file_url("f.bin")], tmp_path / "f", data, connections=8
    )
    assert result.verified and (tmp_path / "f").read_bytes() == data
    assert most >= 2, most
    assert figures(result, slow.file_url("f.bin")).bytes < 3 * MiB  # type: ignore[attr-defined]
    assert not (tmp_path / "f.part.race").exists()


async def test_mirrors_that_never_answer_cost_retries_never_the_download(
    nginx: Callable[..., Nginx], files: Path, tmp_path: Path
) -> None:
    """Fault: two mirrors on ports nothing listens on; the first URL still answers."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    hub = nginx(files)
    dead = [f"http://127.0.0.1:{p}/f.bin" for p in ports]
    data = (files / "f.bin").read_bytes()
    result = await fetch(hub.file_url("f.bin"), dead, tmp_path / "f", data)
    assert result.verified and (tmp_path / "f").read_bytes() == data
    for url in dead:
        f = figures(result, url)
        assert f.errors >= 1 and f.chunks == 0  # type: ignore[attr-defined]


async def test_a_mirror_behind_expiring_signed_redirects_resolves_its_own_url_again(
    chain: tuple[str, dict[str, int], bytes],  # noqa: F811
    nginx: Callable[..., Nginx],
    tmp_path: Path,
) -> None:
    """Fault: the mirror redirects (twice, across origins) to signed URLs that refuse
    after two requests (403), as presigned store URLs expire. The mirror's own URL is
    resolved again (its validators, aiohttp's, held to its answers, not to nginx's):
    never quarantined for it, and the download keeps its chunks."""
    url, hits, data = chain
    hits["expire_after"] = 2
    hub = nginx(tmp_path, limit_rate="256k")  # the chain fixture wrote f.bin there
    events: list[ProgressEvent] = []
    result = await fetch(hub.file_url("f.bin"), [url], tmp_path / "out" / "f", data, events=events)
    assert result.verified and (tmp_path / "out" / "f").read_bytes() == data
    mf = figures(result, url)
    assert mf.chunks >= 2 and not mf.quarantined, result.sources  # type: ignore[attr-defined]
    assert hits["b_refused"] >= 1 and hits["a"] >= 2, (
        hits,
        [e.message for e in events if e.message],
    )
