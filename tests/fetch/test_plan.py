"""The planner: chunks partition [0, size) after any sequence of operations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.fetch.plan import ChunkPlan, ChunkState, choose_chunk_size


def assert_partition(plan: ChunkPlan) -> None:
    chunks = sorted(plan.chunks, key=lambda c: c.start)
    pos = 0
    for c in chunks:
        assert c.start == pos, (c.start, pos)
        assert c.end > c.start
        pos = c.end
    assert pos == plan.size


def test_plan_cuts_into_aligned_chunks() -> None:
    plan = ChunkPlan(10_000, 4096, align=1024)
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 4096), (4096, 8192), (8192, 10_000)]


def test_plan_keeps_done_ranges_and_cuts_the_gaps() -> None:
    plan = ChunkPlan(100, 30, done=[(30, 60)])
    assert [(c.start, c.end, c.state) for c in sorted(plan.chunks, key=lambda c: c.start)] == [
        (0, 30, ChunkState.PENDING),
        (30, 60, ChunkState.DONE),
        (60, 90, ChunkState.PENDING),
        (90, 100, ChunkState.PENDING),
    ]
    assert plan.done_bytes == 30
    assert plan.done_prefix() == 0


def test_overlapping_done_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        ChunkPlan(100, 10, done=[(0, 50), (40, 60)])


def test_split_needs_room_on_both_sides() -> None:
    plan = ChunkPlan(100, 100)
    c = plan.take()
    assert c is not None
    assert plan.split_point(c, 90, min_piece=10) is None
    at = plan.split_point(c, 20, min_piece=10)
    assert at == 60
    tail = plan.split(c, at)
    assert (c.start, c.end, tail.start, tail.end) == (0, 60, 60, 100)
    assert tail.state is ChunkState.PENDING


def test_empty_file_is_finished_at_once() -> None:
    plan = ChunkPlan(0, 10)
    assert plan.finished and plan.take() is None


def test_choose_chunk_size_is_bounded_and_aligned() -> None:
    assert choose_chunk_size(1 << 30, 64) == 1 << 20  # 64 x 1 MiB in flight at most
    assert choose_chunk_size(1 << 30, 16) == 4 << 20
    assert choose_chunk_size(10, 64) == 1 << 20
    assert choose_chunk_size(1 << 40, 1) == 64 << 20
    assert choose_chunk_size(1 << 30, 64, align=3_000_000) % 3_000_000 == 0


ops = st.lists(
    st.tuples(st.sampled_from(["take", "complete", "fail", "split"]), st.integers(0, 10**6)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 10**6),
    chunk=st.integers(1, 10**5),
    align=st.sampled_from([1, 7, 4096]),
    script=ops,
)
def test_any_sequence_keeps_a_partition(size: int, chunk: int, align: int, script: list) -> None:
    plan = ChunkPlan(size, max(chunk, size // 100 + 1), align=align)
    done_before = 0
    for op, n in script:
        active = plan.active()
        if op == "take":
            plan.take()
        elif op == "complete" and active:
            plan.complete(active[n % len(active)])
        elif op == "fail" and active:
            plan.fail(active[n % len(active)])
        elif op == "split" and active:
            c = active[n % len(active)]
            at = plan.split_point(c, c.start + n % max(1, c.length), min_piece=1)
            if at is not None:
                assert at % align == 0
                plan.split(c, at)
        assert_partition(plan)
        # committed bytes only ever go up
        assert plan.done_bytes >= done_before
        done_before = plan.done_bytes
    while (c := plan.take()) is not None:
        plan.complete(c)
    for c in plan.active():
        plan.complete(c)
    assert plan.finished and plan.done_bytes == size
    assert plan.done_prefix() == size
