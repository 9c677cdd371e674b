"""accel/fetch/consensus.py: the repair's policy, as values (hypothesis where it can)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.fetch.consensus import MAX_PIECE, MIN_PIECE, RepairPlan, cover, piece_size_for


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
