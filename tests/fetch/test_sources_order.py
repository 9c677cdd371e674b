"""Partial sources (peers) in the pure policy: sources_have.py, sources_order.py, and the
peer transitions of sources.py. No sockets, no clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.fetch.plan import ChunkPlan, ChunkState
from accel.fetch.sources import SourcePolicy
from accel.fetch.sources_have import Have, HaveError, encode_have, parse_have
from accel.fetch.sources_order import (
    LAST_RESORT_WITH_PEERS,
    Assignment,
    BlockOrder,
    Span,
    assign,
)

HUB = "http://hub/f"
BS = 4


def peers_policy(n: int, **kw: int) -> SourcePolicy:
    return SourcePolicy.of([HUB], peers=[f"http://p{i}/f" for i in range(n)], **kw)


def spans_of(plan: ChunkPlan) -> list[Span]:
    return [Span(c.id, c.start, c.end) for c in plan.pending()]


# --- the ?have bitmap ------------------------------------------------------------------
@given(st.integers(0, 300), st.data())
def test_a_bitmap_reads_back_as_it_was_written(nblocks: int, data: st.DataObject) -> None:
    held = data.draw(st.sets(st.integers(0, max(0, nblocks - 1))) if nblocks else st.just(set()))
    body = (
        f'{{"block_size": {BS}, "size": {nblocks * BS}, '
        f'"have": "{encode_have(Have.of(held), nblocks)}"}}'
    )
    have = parse_have(body.encode(), size=nblocks * BS, block_size=BS)
    assert {b for b in range(nblocks) if b in have} == held
    assert len(have) == len(held)


def test_the_bitmap_is_msb_first_per_byte() -> None:
    # 0x80 0x01: block 0 and block 15
    have = parse_have(b'{"block_size": 1, "size": 16, "have": "gAE="}', size=16, block_size=1)
    assert [b for b in range(16) if b in have] == [0, 15]
    assert have.covers(0, 1) and not have.covers(0, 2) and have.covers(15, 16)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"block_size": 4, "size": 17, "have": "AA=="}',  # another file's size
        b'{"block_size": 8, "size": 16, "have": "AA=="}',  # another block size
        b'{"block_size": 4, "size": 16}',
        b'{"block_size": 4, "size": 16, "have": "not base64!"}',
        b'{"block_size": 4, "size": 160, "have": "AA=="}',  # 8 bits for 40 blocks
        b'{"block_size": true, "size": 16, "have": "AA=="}',
    ],
)
def test_an_answer_for_another_file_or_none_is_refused(body: bytes) -> None:
    size = 160 if b"160" in body else 16
    with pytest.raises(HaveError):
        parse_have(body, size=size, block_size=4)


# --- the policy's peer transitions -------------------------------------------------------
def test_a_peer_holds_nothing_until_it_says_and_gets_only_what_it_holds() -> None:
    p = peers_policy(1)
    assert p.partial and p[1].peer and not p[1].heard
    assert p.pick(0.0, blocks=(0, 1)) == 0  # the peer holds nothing yet
    p = p.holding(1, Have.of({0, 1})).started(0)  # the hub is measuring
    assert p.pick(0.0, blocks=(0, 2)) == 1
    assert p.pick(0.0, blocks=(1, 3)) == 0  # block 2 is not there
    assert p.pick(0.0) == 0  # a chunk of unknown blocks never goes to a peer
    p = p.started(1).finished(1, 100, 1.0).finished(0, 10, 1.0)
    assert p.fastest(0.0) == 0 and p.fastest(0.0, blocks=(0, 2)) == 1


def test_block_not_held_is_no_failure_and_never_quarantines() -> None:
    p = peers_policy(1).holding(1, Have.first(8))
    for _ in range(10):
        p = p.started(1).lacked(1, 0, 1, 100)
    s = p[1]
    assert not s.quarantined and s.failures == 0 and s.errors == 0 and s.not_held == 10
    assert s.active == 0 and 0 not in s.have  # type: ignore[operator]
    assert s.usable(0.0) and p.started(0).pick(0.0, blocks=(1, 8)) == 1


def test_blocks_a_peer_refused_are_not_asked_of_it_again() -> None:
    """Its next bitmap claims them again (a peer whose bitmap runs ahead of its disk):
    they stay out, else the same chunk would go back to it forever."""
    p = peers_policy(1).holding(1, Have.first(8)).started(1).lacked(1, 2, 4)
    p = p.holding(1, Have.first(8))
    assert [b for b in range(8) if b in p[1].have] == [0, 1, 4, 5, 6, 7]  # type: ignore[operator]


def test_a_peer_that_stops_answering_holds_nothing() -> None:
    p = peers_policy(1).holding(1, Have.first(8)).unheard(1)
    assert not p[1].heard and p.pick(0.0, blocks=(0, 1)) == 0


# --- which bytes from whom ---------------------------------------------------------------
def test_the_hub_fetches_only_what_no_peer_holds_and_peers_the_rest() -> None:
    plan = ChunkPlan(8 * BS, BS, align=BS)
    p = peers_policy(1).holding(1, Have.of({0, 1, 2, 3}))
    p = p.started(1).finished(1, 1000, 0.1)  # measured (an untested peer gets one chunk)
    order = BlockOrder.ascending(8)
    got: list[Assignment] = []
    while (a := assign(p, spans_of(plan), block_size=BS, now=0.0, order=order)) is not None:
        chunk = next(c for c in plan.pending() if c.id == a.chunk)
        plan.take_span(chunk, a.start, a.end)
        p = p.started(a.source)
        got.append(a)
    from_peer = {a.start // BS for a in got if a.source == 1}
    from_hub = {a.start // BS for a in got if a.source == 0}
    assert from_peer == {0, 1, 2, 3}
    assert from_hub <= {4, 5, 6, 7} and len(from_hub) == LAST_RESORT_WITH_PEERS


def test_nodes_with_different_seeds_start_on_different_blocks() -> None:
    n = 64
    firsts = set()
    for seed in range(20):
        plan = ChunkPlan(n * BS, BS, align=BS)
        a = assign(
            peers_policy(4), spans_of(plan), block_size=BS, now=0.0,
            order=BlockOrder.shuffled(n, seed),
        )  # fmt: skip
        assert a is not None and a.source == 0
        firsts.add(a.start)
    assert len(firsts) >= 15  # 20 random picks of 64 blocks: about 17 distinct
    again = BlockOrder.shuffled(n, 3)
    assert again == BlockOrder.shuffled(n, 3)  # deterministic given the seed


def test_a_node_never_waits_on_peers_alone() -> None:
    """Every peer gone (quarantined, resting, silent): the hub takes their blocks, with
    its full connections."""
    plan = ChunkPlan(8 * BS, BS, align=BS)
    full = Have.first(8)
    p = peers_policy(3, max_connections=8)
    p = p.holding(1, full).holding(2, full).holding(3, full)
    p = p.started(1).refused(1, 0, "404")  # quarantined
    p = p.started(2).failed(2, 0, 0.0).started(2).failed(2, 0, 0.0)  # resting
    p = p.unheard(3)
    taken = 0
    while (
        a := assign(p, spans_of(plan), block_size=BS, now=0.0, order=BlockOrder.ascending(8))
    ) is not None:
        assert a.source == 0
        chunk = next(c for c in plan.pending() if c.id == a.chunk)
        plan.take_span(chunk, a.start, a.end)
        p = p.started(0)
        taken += 1
    assert taken == 8


def test_the_hub_goes_on_in_order_and_leaves_a_node_in_step_with_it() -> None:
    """From its own start the hub's blocks go on in order; when a peer already holds
    the block before the front (it is on the same path), the next one is elsewhere:
    inside the largest run nobody holds, never just after a peer's blocks."""
    n = 32
    plan = ChunkPlan(n * BS, BS, align=BS)
    p = peers_policy(1).holding(1, Have()).started(1).finished(1, 1000, 0.1)
    order = BlockOrder.shuffled(n, 7)
    a = assign(p, spans_of(plan), block_size=BS, now=0.0, order=order)
    assert a is not None and a.source == 0 and a.start // BS == order.ranks.index(0)
    start = a.start // BS
    plan.take_span(next(x for x in plan.pending() if x.id == a.chunk), a.start, a.end)
    b = assign(p, spans_of(plan), block_size=BS, now=0.0, order=order, front=start + 1)
    assert b is not None and b.start // BS == start + 1  # on in order
    # a peer holds this node's start block too: in step with it, so jump
    p2 = p.holding(1, Have.of({start}))
    c = assign(p2, spans_of(plan), block_size=BS, now=0.0, order=order, front=start + 1)
    assert c is not None and c.source == 0
    assert c.start // BS not in (start, start + 1, start + 2)


def test_a_chunk_that_failed_on_its_only_holder_goes_to_the_hub() -> None:
    plan = ChunkPlan(2 * BS, BS, align=BS)
    p = peers_policy(1).holding(1, Have.first(2))
    chunks = plan.pending()
    a = assign(
        p, spans_of(plan), block_size=BS, now=0.0, order=BlockOrder.ascending(2),
        avoid={chunks[0].id: {1}},
    )  # fmt: skip
    assert a is not None and a.source == 1 and a.chunk == chunks[1].id
    p = p.started(1)  # measuring: no second request to it before the first ends
    a = assign(
        p, spans_of(plan), block_size=BS, now=0.0, order=BlockOrder.ascending(2),
        avoid={chunks[0].id: {1}},
    )  # fmt: skip
    assert a is not None and a.source == 0 and a.chunk == chunks[0].id


_peer_event = st.tuples(
    st.sampled_from(["assign", "ok", "fail", "corrupt", "lacked", "have", "unheard"]),
    st.integers(0, 3),
    st.integers(0, (1 << 12) - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_peer_event, max_size=60), st.integers(1, 12), st.integers(0, 2**32))
def test_no_chunk_ever_goes_to_a_source_without_all_its_blocks(
    events: list[tuple[str, int, int]], nblocks: int, seed: int
) -> None:
    """Whatever the peers hold and do: every request is inside one pending chunk,
    aligned to blocks, to a source holding every block of it; the last resort is never
    given up; a block_not_held never quarantines."""
    size = nblocks * BS - (seed % BS)  # a short last block, sometimes
    plan = ChunkPlan(size, 3 * BS, align=BS)
    p = peers_policy(3, max_connections=2)
    order = BlockOrder.shuffled(nblocks, seed)
    running: dict[int, list[tuple[int, int, int]]] = {i: [] for i in range(4)}
    now = 0.0
    front: int | None = None
    for kind, i, bits in events:
        now += 0.5
        if kind == "assign":
            pending = spans_of(plan)
            a = assign(p, pending, block_size=BS, now=now, order=order, front=front)
            if a is None:
                if p[0].active == 0:  # an idle hub waits only on usable peers' blocks
                    for sp in pending:
                        for b in range(sp.start // BS, -(-sp.end // BS)):
                            assert any(
                                s.peer and s.usable(now) and s.holds(b, b + 1) for s in p.sources
                            ), (b, p)
                continue
            if a.source == 0:
                front = -(-a.end // BS)
            span = next(sp for sp in pending if sp.chunk == a.chunk)
            assert span.start <= a.start < a.end <= span.end
            assert a.start % BS == 0 and (a.end % BS == 0 or a.end == size)
            s = p[a.source]
            assert s.usable(now) and s.holds(a.start // BS, -(-a.end // BS))
            chunk = next(c for c in plan.pending() if c.id == a.chunk)
            taken = plan.take_span(chunk, a.start, a.end)
            assert (taken.start, taken.end) == (a.start, a.end)
            p = p.started(a.source)
            running[a.source].append((taken.id, taken.start, taken.end))
        elif kind == "have" and i:
            p = p.holding(i, Have(bits))
        elif kind == "unheard" and i:
            p = p.unheard(i)
        elif running[i]:
            cid, start, end = running[i].pop(0)
            chunk = next(c for c in plan.active() if c.id == cid)
            if kind == "ok":
                p = p.finished(i, end - start, 0.1)
                plan.complete(chunk)
            else:
                if kind == "fail":
                    p = p.failed(i, 0, now)
                elif kind == "corrupt":
                    p = p.corrupt(i, end - start)
                else:
                    before = p[i].quarantined
                    p = p.lacked(i, start // BS, -(-end // BS), 0) if i else p.ended(i, 0)
                    assert p[i].quarantined == before
                plan.fail(chunk, refund=True)
        assert not p[0].quarantined and p[0].usable(now)
        # the plan still partitions the file
        pieces = sorted((c.start, c.end) for c in plan.chunks)
        assert pieces[0][0] == 0 and pieces[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    active = {r[0] for rs in running.values() for r in rs}
    assert {c.id for c in plan.active()} == active  # every active chunk has its request


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.data())
def test_take_span_keeps_the_plan_a_partition(nblocks: int, data: st.DataObject) -> None:
    size = nblocks * BS
    plan = ChunkPlan(size, 5 * BS, align=BS)
    for _ in range(data.draw(st.integers(0, 20))):
        pending = plan.pending()
        if not pending:
            break
        c = data.draw(st.sampled_from(pending))
        first = data.draw(st.integers(c.start // BS, c.end // BS - 1))
        last = data.draw(st.integers(first + 1, c.end // BS))
        cid = c.id
        t = plan.take_span(c, first * BS, last * BS)
        assert t.id == cid and (t.start, t.end) == (first * BS, last * BS)
        assert t.state is ChunkState.ACTIVE
        if data.draw(st.booleans()):
            plan.complete(t)
        else:
            plan.fail(t)
        pieces = sorted((x.start, x.end) for x in plan.chunks)
        assert pieces[0][0] == 0 and pieces[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
        assert plan.pending_count == len(plan.pending())
    while (c := plan.take()) is not None:
        plan.complete(c)
    assert plan.finished and plan.done_bytes == size and plan.done_prefix() == size
