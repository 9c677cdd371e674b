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
out; deterministic given the seed, so the fleet simulation imports it as it is.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from accel.fetch.sources import MIN_SHARE, SourcePolicy

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

    ``limits[i]``: the longest request source ``i`` gets now (None: a whole pending
    chunk); ``avoid[chunk]``: sources that chunk failed on (they do not take it, and
    do not count as holding it); ``front``: the block after the last one the last
    resort was given (None: none yet). See the module docstring for the order.
    """
    if block_size <= 0 or not pending:
        return None
    avoid = avoid or {}
    sources = policy.sources
    usable = [i for i, s in enumerate(sources) if s.usable(now)]
    best = max((sources[i].rate or 0.0 for i in usable if not sources[i].last_resort), default=0.0)
    helpers = [i for i in usable if not sources[i].last_resort and _fast(sources[i].rate, best)]
    # every pending block: (block, its span) and who (but the last resort) can send it
    blocks: list[tuple[int, Span]] = []
    for sp in pending:
        for b in range(sp.start // block_size, -(-sp.end // block_size)):
            blocks.append((b, sp))
    holders: dict[int, int] = {}
    for b, sp in blocks:
        bad = avoid.get(sp.chunk, ())
        holders[b] = sum(1 for i in helpers if i not in bad and sources[i].holds(b, b + 1))
    # peers and mirrors first, as the selection policy ranks them; the last resort last
    free = [
        i
        for i in helpers
        if sources[i].active < sources[i].max_connections and not sources[i].measuring
    ]
    free.sort(key=lambda i: _preference(policy, i))
    for i in free:
        got = _pick_for(policy, i, blocks, holders, order, avoid, block_size, limits)
        if got is not None:
            return got
    lr = next(i for i, s in enumerate(sources) if s.last_resort)
    if sources[lr].active >= last_resort_cap(policy, now):
        return None

    def elsewhere(b: int) -> bool:
        return b >= 0 and any(sources[i].holds(b, b + 1) for i in helpers)

    first = _hub_block(blocks, holders, order, front, elsewhere, idle=sources[lr].active == 0)
    if first is None:
        return None
    return _extend(policy, lr, first, dict(blocks)[first], holders, block_size, limits, lr=True)


def _hub_block(
    blocks: list[tuple[int, Span]],
    holders: Mapping[int, int],
    order: BlockOrder,
    front: int | None,
    elsewhere: Callable[[int], bool],
    *,
    idle: bool,
) -> int | None:
    """The last resort's next block (see the module docstring), or None to wait.

    ``front`` when nobody else holds it nor the two blocks before it; else a seeded
    point in the middle half of the largest run of blocks nobody holds and nobody is
    likely fetching: the two blocks right after a peer's held blocks are probably that
    peer's own front (the one it is fetching, and the one its bitmap is a block behind
    on). Those are taken only when this
    node has no request at the hub at all (so a node always makes progress, and at
    the end each asks for at most one block someone else may be fetching). The first
    request goes to this node's own start: its first block in :class:`BlockOrder`."""
    free = sorted(b for b, _ in blocks if not holders[b])
    if not free:
        return None
    if front is None:
        return min(free, key=order.rank)
    if (
        front in holders
        and not holders[front]
        and not (elsewhere(front - 1) or elsewhere(front - 2))
    ):
        # on in order; unless a peer already holds the block this node just fetched:
        # it is on the same path at the hub (a copy from here would take longer), and
        # two nodes in step would fetch every block twice
        return front
    calm = [b for b in free if not (elsewhere(b - 1) or elsewhere(b - 2))]
    if not calm:
        return min(free, key=order.rank) if idle else None
    runs: list[tuple[int, int]] = []  # (first, length)
    for b in calm:
        if runs and runs[-1][0] + runs[-1][1] == b:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    start, length = max(runs, key=lambda r: (r[1], -order.rank(r[0])))
    if length <= 2:
        # only short runs are left (the end): each node takes its own first of them
        # (its seeded order), so that nodes ending together do not all take the same
        return min(calm, key=order.rank)
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
    blocks: list[tuple[int, Span]],
    holders: Mapping[int, int],
    order: BlockOrder,
    avoid: Mapping[int, Collection[int]],
    block_size: int,
    limits: Sequence[int | None] | None,
) -> Assignment | None:
    """A peer's (or mirror's) next request: the rarest pending block it holds (ties:
    this node's order), and on from there."""
    s = policy[i]
    best: tuple[tuple[int, int], int, Span] | None = None
    for b, sp in blocks:
        if i in avoid.get(sp.chunk, ()) or not s.holds(b, b + 1):
            continue
        key = (holders[b], order.rank(b))
        if best is None or key < best[0]:
            best = (key, b, sp)
    if best is None:
        return None
    _, first, sp = best
    return _extend(policy, i, first, sp, holders, block_size, limits, lr=False)


def _extend(
    policy: SourcePolicy,
    i: int,
    first: int,
    sp: Span,
    holders: Mapping[int, int],
    block_size: int,
    limits: Sequence[int | None] | None,
    *,
    lr: bool,
) -> Assignment:
    """From block ``first`` on, as far as source ``i`` may go in one request: within
    the pending chunk, up to its limit, over blocks it holds (the last resort: blocks
    nobody else holds)."""
    s = policy[i]
    limit = limits[i] if limits is not None and i < len(limits) else None
    most = max(1, -(-limit // block_size)) if limit else None
    end = first + 1
    last = -(-sp.end // block_size)
    while end < last and (most is None or end - first < most):
        if lr and holders.get(end, 0):
            break
        if not lr and not s.holds(end, end + 1):
            break
        end += 1
    return Assignment(i, sp.chunk, first * block_size, min(sp.end, end * block_size))
