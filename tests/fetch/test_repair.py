"""accel/fetch/repair.py: a wrong SHA256 with no block digests is repaired, not refetched.

The policy (``RepairPlan``, ``cover``) is tested as a value with hypothesis; the driver
through a real nginx behind the fault proxy, which flips or shifts bytes of chosen
answers silently (status, headers and length stay right).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.errors import IntegrityError
from accel.fetch import Engine, Expected, ProgressEvent
from accel.fetch.checkpoint import checkpoint_path, load_checkpoint, part_path, revalidate
from accel.fetch.repair import MAX_PIECE, MIN_PIECE, RepairPlan, cover, piece_size_for
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.nginx import Nginx

BLOCK = 256 * 1024
SIZE = 8 * BLOCK + 777  # 9 chunks of BLOCK, the last one short


# --- the policy -----------------------------------------------------------------------
@st.composite
def recorded_ranges(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    total = draw(st.integers(0, 10_000))
    cuts = sorted(set(draw(st.lists(st.integers(0, total), max_size=12))))
    ranges = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    keep = draw(st.lists(st.booleans(), min_size=len(ranges), max_size=len(ranges)))
    return total, [r for r, k in zip(ranges, keep, strict=True) if k]


@given(recorded_ranges(), st.integers(1, 3000))
def test_cover_partitions_the_file_and_keeps_every_recorded_range(
    case: tuple[int, list[tuple[int, int]]], piece_size: int
) -> None:
    total, recorded = case
    pieces = cover(total, recorded, piece_size)
    pos = 0
    for start, end, known in pieces:
        assert start == pos and 0 < end - start <= piece_size
        assert known == ((start, end) in recorded)
        pos = end
    assert pos == total
    short = [r for r in recorded if r[1] - r[0] <= piece_size]
    assert sum(1 for *_, known in pieces if known) == len(short)
    for a, b in recorded:  # a recorded range is never cut across by a piece
        assert any(s == a for s, _, _ in pieces) and any(e == b for _, e, _ in pieces)


@given(st.integers(0, 1 << 40))
def test_pieces_are_about_a_64th_of_the_file_within_bounds(total: int) -> None:
    size = piece_size_for(total)
    assert MIN_PIECE <= size <= MAX_PIECE and size % 65536 == 0
    if MIN_PIECE < size < MAX_PIECE:
        assert 64 * (size - 65536) < total <= 64 * size


def test_cover_refuses_overlapping_records() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        cover(100, [(0, 60), (50, 100)], 10)


def plan_of(n: int, length: int = 10, budget: int = 10**9) -> RepairPlan:
    return RepairPlan.start([(i * length, (i + 1) * length, "w") for i in range(n)], budget=budget)


def test_a_piece_settles_only_when_its_newest_fetch_agrees_with_an_earlier_one() -> None:
    plan = plan_of(1)
    assert not plan.piece_at(0).settled  # one fetch is no consensus
    plan = plan.fetched(0, "x", 10)
    assert plan.piece_at(0).suspect and not plan.piece_at(0).settled
    plan = plan.hashed().fetched(0, "y", 10)  # three answers, all different
    assert plan.piece_at(0).suspect
    plan = plan.hashed().fetched(0, "x", 10)  # the disk holds x, and x came twice
    assert plan.piece_at(0).settled and plan.repaired == [plan.piece_at(0)]


def test_suspects_are_fetched_before_unchecked_pieces() -> None:
    plan = plan_of(4)
    assert plan.next_piece().start == 0  # type: ignore[union-attr]
    plan = plan.fetched(20, "bad", 10).hashed()  # piece 2 disagrees with its record
    assert plan.next_piece().start == 20  # type: ignore[union-attr]
    assert plan.next_piece(busy={20}).start == 0  # type: ignore[union-attr]


def test_no_new_fetch_until_a_change_on_disk_is_hashed() -> None:
    plan = plan_of(3).fetched(0, "w", 10)
    assert not plan.unhashed  # the same bytes again: nothing changed on disk
    plan = plan.fetched(10, "new", 10)
    assert plan.unhashed and plan.next_piece() is None
    assert plan.hashed().next_piece() is not None


def test_the_budget_counts_fetches_in_flight_and_failed_attempts() -> None:
    plan = plan_of(3, budget=25)
    assert plan.next_piece(busy={0}, reserved=10) is not None  # 10 + 10 <= 25
    assert plan.next_piece(busy={0, 10}, reserved=20) is None  # 20 + 10 > 25
    assert plan.charge(16).next_piece() is None  # 16 + 10 > 25
    with pytest.raises(ValueError):
        RepairPlan.start([(0, 10, "a"), (5, 20, "b")], budget=1)


def drive(plan: RepairPlan, answers: dict[int, list[bool]]) -> tuple[RepairPlan, bool, int]:
    """Run ``plan`` against an oracle: ``answers[start][k]`` says whether the k-th refetch
    of that piece is good. The file matches when every piece's newest bytes are good.
    Returns the final plan, whether it verified, and how many fetches it made."""
    good = {p.start: "good" for p in plan.pieces}
    newest = {p.start: p.votes[0] for p in plan.pieces}
    fetches = 0
    while True:
        piece = plan.next_piece()
        if piece is None:
            if not plan.unhashed:
                return plan, False, fetches
            if all(newest[s] == good[s] for s in newest):
                return plan, True, fetches
            plan = plan.hashed()
            continue
        k = len(piece.votes) - 1
        ok = answers[piece.start][k] if k < len(answers[piece.start]) else True
        digest = "good" if ok else f"bad{fetches}"
        fetches += 1
        newest[piece.start] = digest
        plan = plan.fetched(piece.start, digest, piece.length)


@st.composite
def corrupt_downloads(draw: st.DrawFn) -> tuple[RepairPlan, dict[int, list[bool]]]:
    n = draw(st.integers(1, 12))
    first_ok = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    plan = RepairPlan.start(
        [(i * 10, i * 10 + 10, "good" if ok else f"orig{i}") for i, ok in enumerate(first_ok)],
        budget=draw(st.integers(0, 40 * n)),
        max_votes=draw(st.integers(2, 6)),
    )
    answers = {
        i * 10: draw(st.lists(st.booleans(), max_size=6)) for i in range(n)
    }  # fmt: skip
    return plan, answers


@settings(max_examples=300)
@given(corrupt_downloads())
def test_any_repair_ends_within_its_budget_and_its_votes(
    case: tuple[RepairPlan, dict[int, list[bool]]],
) -> None:
    plan, answers = case
    end, verified, fetches = drive(plan, answers)
    assert end.spent <= end.budget
    assert all(len(p.votes) <= end.max_votes for p in end.pieces)
    assert fetches == sum(len(p.votes) - 1 for p in end.pieces)
    if not verified:  # it stopped for a reason it can name
        nothing_fits = end.next_piece() is None and not end.unhashed
        assert nothing_fits


@settings(max_examples=300)
@given(st.integers(1, 12), st.data())
def test_one_corrupt_answer_per_piece_is_always_repaired_within_one_and_a_half_files(
    n: int, data: st.DataObject
) -> None:
    """Each piece gets at most one corrupt answer (its recorded one or one refetch) and
    at most half of them get one: a budget of 1.5 files always verifies."""
    corrupt = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=max(1, n // 2)))
    where = {i: data.draw(st.integers(0, 1)) for i in corrupt}  # 0: the recorded fetch
    where[min(corrupt)] = 0  # the file is wrong: that is why a repair runs
    plan = RepairPlan.start(
        [(i * 10, i * 10 + 10, f"orig{i}" if where.get(i) == 0 else "good") for i in range(n)],
        budget=15 * n,
    )
    answers = {i * 10: [where.get(i) != 1] for i in range(n)}
    end, verified, _ = drive(plan, answers)
    assert verified, end


# --- the driver, through a corrupting origin ----------------------------------------------
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
