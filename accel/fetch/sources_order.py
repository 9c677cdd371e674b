"""Which chunk each source fetches when peers are among the sources.

With only the hub and whole mirrors, every source holds every byte and the next chunk
is simply the lowest pending one (:mod:`~accel.fetch.plan`). With peers (nodes serving
what they hold, :mod:`~accel.fetch.sources_have`) the choice of *which* bytes matters
as much as *from whom*: five nodes pre-seeding one model at once, each fetching the
lowest pending chunk from the hub, make the hub send every byte five times. So:

- a peer or mirror gets a chunk only of blocks it holds (:meth:`SourceState.holds`),
  the rarest first (held by the fewest sources that could send it now), as
  BitTorrent's rarest-first does, so what only one peer has spreads before it leaves;
- the last resort (the hub or store) fetches only blocks no usable source but itself
  holds. Each node starts at its own block (:class:`BlockOrder`, from a seed) and goes
  on in order from there; when the next block is held elsewhere (another node's start
  region), it jumps into the largest run of blocks nobody holds, a seeded point of its
  middle half, never its first block (another node is fetching that one: its bitmap
  says so only once the block is done). Nodes starting at the same moment thus fetch
  different parts of the file from the hub and read the rest from each other, as
  bisection does; and while live peers are there it keeps to
  :data:`LAST_RESORT_WITH_PEERS` connections, so its blocks finish (and become
  sharable) soon instead of all at once;
- a peer that is gone (resting, quarantined, slower than ``MIN_SHARE`` of the best)
  holds nothing for this choice: the hub takes its blocks, and a node never waits on
  peers alone.

Pure: the policy's state, the pending chunks and ``now`` in, one :class:`Assignment`
out; deterministic given the seed, so the fleet simulation imports it as it is. It
runs at every request a node sends, so it works on block *sets*, the bitmaps' ints,
never block by block: who could send what is an AND per source, how many sources
hold each block a bit-sliced counter (:func:`_count`), the rarest of a source's
blocks a few masks (:func:`_fewest`). tests/fetch/test_sources_order_reference.py
holds it to the per-block scan it replaced, choice for choice.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from accel.fetch.sources import MIN_SHARE, SourcePolicy, SourceState

__all__ = ["LAST_RESORT_WITH_PEERS", "Assignment", "BlockOrder", "Span", "assign"]

#: the last resort's connections at once while a live peer may soon hold what it would
#: fetch: one, so each of its blocks finishes early and other nodes can read it from us
#: (5 nodes, 256 MiB: two made the hub send 1.45-1.65x the model, one 1.33-1.38x, the
#: last node ready a second or two later)
LAST_RESORT_WITH_PEERS = 1


@dataclass(frozen=True)
class BlockOrder:
    """A node's own order of a file's blocks (``ranks[b]``: block ``b``'s place)."""

    ranks: tuple[int, ...]

    @classmethod
    def shuffled(cls, nblocks: int, seed: int) -> BlockOrder:
        """A permutation of ``range(nblocks)`` drawn from ``seed`` (one per node)."""
        perm = list(range(max(0, nblocks)))
        random.Random(seed).shuffle(perm)
        ranks = [0] * len(perm)
        for place, block in enumerate(perm):
            ranks[block] = place
        return cls(tuple(ranks))

    @classmethod
    def ascending(cls, nblocks: int) -> BlockOrder:
        return cls(tuple(range(max(0, nblocks))))

    def rank(self, block: int) -> int:
        return self.ranks[block] if 0 <= block < len(self.ranks) else block


@dataclass(frozen=True)
class Span:
    """A pending chunk of the plan: its id and bytes ``[start, end)`` (block-aligned
    start; the end is a block boundary or the end of the file)."""

    chunk: int
    start: int
    end: int


@dataclass(frozen=True)
class Assignment:
    """Source ``source`` fetches bytes ``[start, end)`` of pending chunk ``chunk``."""

    source: int
    chunk: int
    start: int
    end: int


def last_resort_cap(policy: SourcePolicy, now: float) -> int:
    """Connections the last resort may have now: few while a live peer is there."""
    lr = next(i for i, s in enumerate(policy.sources) if s.last_resort)
    cap = policy[lr].max_connections
    if policy.expect_peers or any(s.peer and s.heard and s.usable(now) for s in policy.sources):
        cap = min(cap, LAST_RESORT_WITH_PEERS)
    return cap


def assign(
    policy: SourcePolicy,
    pending: Sequence[Span],
    *,
    block_size: int,
    now: float,
    order: BlockOrder,
    limits: Sequence[int | None] | None = None,
    avoid: Mapping[int, Collection[int]] | None = None,
    front: int | None = None,
) -> Assignment | None:
    """The next request: which source fetches which bytes, or None (every source
    that could take something is at its cap, or only busy peers hold what is left).

    ``pending``: the plan's pending chunks (block-aligned starts, so no two share a
    block). ``limits[i]``: the longest request source ``i`` gets now (None: a whole
    pending chunk); ``avoid[chunk]``: sources that chunk failed on (they do not take
    it, and do not count as holding it); ``front``: the block after the last one the
    last resort was given (None: none yet). See the module docstring for the order.

    Block sets are Python ints (bit ``b`` = block ``b``, as :class:`Have` holds them):
    a node with P peers and B pending blocks pays O(P log P) big-int operations of
    B bits each per request, plus one pass over the spans, instead of P x B calls of
    ``SourceState.holds`` (a simulated fleet's requests, 11 peers and 137 pending
    blocks on average: 0.94 ms a request before, 0.09 ms; bench/bench_assign.py).
    """
    if block_size <= 0 or not pending:
        return None
    sources = policy.sources
    usable = [i for i, s in enumerate(sources) if s.usable(now)]
    best = max((sources[i].rate or 0.0 for i in usable if not sources[i].last_resort), default=0.0)
    helpers = [i for i in usable if not sources[i].last_resort and _fast(sources[i].rate, best)]
    blocks = _Pending(pending, block_size, avoid or {})
    # what each helper could send of the pending blocks, and everything it holds (the
    # hub's "is a peer on this path" test looks at held blocks, pending or not)
    sendable = {i: blocks.sendable(i, _bits(sources[i])) for i in helpers}
    anywhere = 0  # pending blocks some helper could send
    for m in sendable.values():
        anywhere |= m
    held = 0  # blocks some helper holds (-1 bits: a whole-file source, every block)
    for i in helpers:
        held |= _bits(sources[i])
    # peers and mirrors first, as the selection policy ranks them; the last resort last
    free = [
        i
        for i in helpers
        if sources[i].active < sources[i].max_connections and not sources[i].measuring
    ]
    free.sort(key=lambda i: _preference(policy, i))
    counts: list[int] | None = None  # counted once, only when a helper is free
    for i in free:
        if not sendable[i]:
            continue
        if counts is None:
            counts = _count(sendable.values())
        return _pick_for(policy, i, sendable[i], counts, blocks, order, block_size, limits)
    lr = next(i for i, s in enumerate(sources) if s.last_resort)
    if sources[lr].active >= last_resort_cap(policy, now):
        return None
    nobody = blocks.mask & ~anywhere
    first = _hub_block(nobody, held, order, front, idle=sources[lr].active == 0)
    if first is None:
        return None
    # on over blocks no helper could send: the run of clear bits of ``anywhere``
    run = _zeros_from(anywhere >> (first + 1))
    return _extend(policy, lr, first, run, blocks.span_of(first), block_size, limits)


class _Pending:
    """The pending spans as block sets: all their blocks, and per source the blocks of
    the chunks it failed on."""

    __slots__ = ("_avoided", "_pending", "block_size", "mask")

    def __init__(
        self, pending: Sequence[Span], block_size: int, avoid: Mapping[int, Collection[int]]
    ) -> None:
        # one pass of a few int operations per span (a node's spans are its plan's
        # chunks: a few; the simulation's are runs of pending pieces)
        mask = 0
        for sp in pending:
            lo = sp.start // block_size
            hi = -(-sp.end // block_size)
            if hi > lo:
                mask |= ((1 << (hi - lo)) - 1) << lo
        self.mask = mask
        self.block_size = block_size
        self._pending = pending
        self._avoided: dict[int, int] = {}  # source -> blocks it must not be given
        for sp in pending if avoid else ():
            for i in avoid.get(sp.chunk, ()):
                self._avoided[i] = self._avoided.get(i, 0) | self._blocks(sp)

    def _blocks(self, sp: Span) -> int:
        lo = sp.start // self.block_size
        hi = -(-sp.end // self.block_size)
        return ((1 << (hi - lo)) - 1) << lo if hi > lo else 0

    def sendable(self, i: int, held: int) -> int:
        """The pending blocks source ``i`` holds (``held``) and may be given."""
        return held & self.mask & ~self._avoided.get(i, 0)

    def span_of(self, block: int) -> Span:
        """The pending span block ``block`` is in (one scan, once per request)."""
        bs = self.block_size
        return next(sp for sp in self._pending if sp.start // bs <= block < -(-sp.end // bs))


def _bits(s: SourceState) -> int:
    """The blocks ``s`` holds as an int; -1 (every bit set) for a whole-file source."""
    return -1 if s.have is None else s.have.bits


def _members(bits: int) -> Iterator[int]:
    """The blocks of a (finite, non-negative) block set, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def _first_in_order(bits: int, order: BlockOrder) -> int:
    """Of a non-empty block set, the block first in this node's order (ties, for an
    order that is not a permutation: the lowest)."""
    return min(_members(bits), key=order.rank)


def _ones_from(bits: int) -> int:
    """How many blocks in a row from bit 0 are set (-1: all of them, unbounded)."""
    return -1 if bits == -1 else (bits ^ (bits + 1)).bit_length() - 1


def _zeros_from(bits: int) -> int:
    """How many blocks in a row from bit 0 are clear (-1: all of them, unbounded)."""
    return -1 if bits == 0 else (bits & -bits).bit_length() - 1


def _count(sets: Iterable[int]) -> list[int]:
    """How many of ``sets`` hold each block, every block's counter at once: bit ``b`` of
    ``digits[j]`` is bit ``j`` of block ``b``'s count (bit-sliced binary counters;
    adding a set is a ripple carry over the digits, a few big-int operations)."""
    digits: list[int] = []
    for carry in sets:
        j = 0
        while carry:
            if j == len(digits):
                digits.append(carry)
                break
            d = digits[j]
            digits[j] = d ^ carry
            carry &= d
            j += 1
    return digits


def _fewest(bits: int, digits: list[int]) -> int:
    """The blocks of ``bits`` whose count (:func:`_count`) is the least: from the top
    digit down, keep those with a 0 there whenever some have one."""
    for d in reversed(digits):
        low = bits & ~d
        if low:
            bits = low
    return bits


def _hub_block(
    nobody: int,
    held: int,
    order: BlockOrder,
    front: int | None,
    *,
    idle: bool,
) -> int | None:
    """The last resort's next block (see the module docstring), or None to wait.

    ``nobody``: the pending blocks no usable source but the last resort could send;
    ``held``: every block some usable source holds (pending or not).

    ``front`` when nobody else holds it nor the two blocks before it; else a seeded
    point in the middle half of the largest run of blocks nobody holds and nobody is
    likely fetching: the two blocks right after a peer's held blocks are probably that
    peer's own front (the one it is fetching, and the one its bitmap is a block behind
    on). Those are taken only when this
    node has no request at the hub at all (so a node always makes progress, and at
    the end each asks for at most one block someone else may be fetching). The first
    request goes to this node's own start: its first block in :class:`BlockOrder`."""
    if not nobody:
        return None
    if front is None:
        return _first_in_order(nobody, order)
    # the blocks one or two after a held one (block 0 and 1 have fewer before them)
    behind = (held << 1) | (held << 2)
    if front >= 0 and nobody >> front & 1 and not behind >> front & 1:
        # on in order; unless a peer already holds the block this node just fetched:
        # it is on the same path at the hub (a copy from here would take longer), and
        # two nodes in step would fetch every block twice
        return front
    calm = nobody & ~behind
    if not calm:
        return _first_in_order(nobody, order) if idle else None
    # the largest run of calm blocks (ties: the one whose first block is first in order,
    # then the lowest)
    start = length = 0
    best: tuple[int, int] | None = None
    rest = calm
    while rest:
        at = (rest & -rest).bit_length() - 1
        n = _ones_from(rest >> at)
        rest ^= ((1 << n) - 1) << at
        key = (n, -order.rank(at))
        if best is None or key > best:
            best, start, length = key, at, n
    if length <= 2:
        # only short runs are left (the end): each node takes its own first of them
        # (its seeded order), so that nodes ending together do not all take the same
        return _first_in_order(calm, order)
    n = max(1, len(order.ranks))
    at = length // 4 + (order.rank(start) * (length // 2)) // n
    return start + max(1, min(length - 1, at))


def _fast(rate: float | None, best: float) -> bool:
    return rate is None or rate >= MIN_SHARE * best


def _preference(policy: SourcePolicy, i: int) -> tuple[int, float, int, int]:
    """Untested sources first (their measurement), then the best share per connection."""
    s = policy[i]
    share = (s.rate or 0.0) / (s.active + 1)
    return (0 if s.rate is None else 1, -share, s.active, i)


def _pick_for(
    policy: SourcePolicy,
    i: int,
    sendable: int,
    counts: list[int],
    blocks: _Pending,
    order: BlockOrder,
    block_size: int,
    limits: Sequence[int | None] | None,
) -> Assignment:
    """A peer's (or mirror's) next request: the rarest pending block it may send
    (``sendable``, not empty; rarest by ``counts``, ties: this node's order), and on
    from there over blocks it holds."""
    first = _first_in_order(_fewest(sendable, counts), order)
    run = _ones_from(_bits(policy[i]) >> (first + 1))
    return _extend(policy, i, first, run, blocks.span_of(first), block_size, limits)


def _extend(
    policy: SourcePolicy,
    i: int,
    first: int,
    run: int,
    sp: Span,
    block_size: int,
    limits: Sequence[int | None] | None,
) -> Assignment:
    """From block ``first`` on, as far as source ``i`` may go in one request: within
    the pending chunk ``sp``, up to its limit, over the ``run`` blocks after ``first``
    it may take (-1: unbounded): those it holds (the last resort: those nobody else
    could send)."""
    limit = limits[i] if limits is not None and i < len(limits) else None
    end = -(-sp.end // block_size)
    if limit:
        end = min(end, first + max(1, -(-limit // block_size)))
    if run >= 0:
        end = min(end, first + 1 + run)
    end = max(end, first + 1)
    return Assignment(i, sp.chunk, first * block_size, min(sp.end, end * block_size))
