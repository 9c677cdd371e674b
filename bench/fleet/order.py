"""Which block a node asks a source for next: the one policy the simulation injects.

STAND-IN. These were written while the node's own chunk-order / partial-source policy
(issue 20, ``accel.fetch.sources_order``) was not on main. It is now, and it decides
source and block together (``assign``), not the block alone, so it does not fit this
callable: ``simulate(cfg, real_order=True)`` (``bench_fleet.py --policies real``)
runs it through :mod:`bench.fleet.assign` instead of ``SourcePolicy.pick`` plus this
order. The stand-ins stay for the ``engine`` and ``tuned`` runs of bench/RESULTS.md
and for comparison; a next step is to make ``real`` the default.

A block set is a Python int used as a bitmap (bit ``b`` = block ``b``): the node's
candidates for one source are ``lacks & ~asked & source_has`` (what the node last saw
of the source through ``?have``), a few machine-word operations even for 6,400 blocks.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["ORDERS", "ChunkOrder", "stand_in_random", "stand_in_rare", "stand_in_stripe"]


class ChunkOrder(Protocol):
    """``candidates`` (!= 0): blocks the node lacks, has not asked for, and the source
    holds; ``from_store``: the source is the store (the last resort, holds all);
    ``peers_hold``: the union of what the node last saw its peers hold; ``offset``: a
    block index fixed per node (its own random place in the file)."""

    def __call__(
        self,
        candidates: int,
        nblocks: int,
        rng: random.Random,
        from_store: bool,
        peers_hold: int,
        offset: int,
    ) -> int: ...


def _first_at_or_after(candidates: int, start: int) -> int:
    upper = candidates >> start
    if upper:
        return start + ((upper & -upper).bit_length() - 1)
    return (candidates & -candidates).bit_length() - 1


def stand_in_random(
    candidates: int,
    nblocks: int,
    rng: random.Random,
    from_store: bool,
    peers_hold: int,
    offset: int,
) -> int:
    """STAND-IN for the real rule: a block the node lacks, near-uniformly at random (the
    first candidate at or after a random position), from the store preferring blocks
    none of its peers holds. Random so that nodes reading the store at once fetch
    different blocks; but independent random picks from the store are a coupon
    collector: the fleet's store reads cover all n blocks only after ~n ln n of them."""
    if from_store:
        candidates = candidates & ~peers_hold or candidates
    return _first_at_or_after(candidates, rng.randrange(nblocks))


def stand_in_stripe(
    candidates: int,
    nblocks: int,
    rng: random.Random,
    from_store: bool,
    peers_hold: int,
    offset: int,
) -> int:
    """STAND-IN variant: from the store, in file order from the node's own offset
    (skipping what its peers hold), so that nodes' store reads are runs from spread-out
    starting points that meet instead of independent draws that repeat; from peers,
    random as :func:`stand_in_random`."""
    if from_store:
        return _first_at_or_after(candidates & ~peers_hold or candidates, offset)
    return _first_at_or_after(candidates, rng.randrange(nblocks))


def stand_in_rare(
    candidates: int,
    nblocks: int,
    rng: random.Random,
    from_store: bool,
    peers_hold: int,
    offset: int,
) -> int:
    """STAND-IN variant, rarest first in two levels: among the candidates, those at most
    one of the node's peers holds (as it last saw; ``peers_hold`` is then the blocks
    two or more hold), at random; BitTorrent's rule, so that no piece stays rare."""
    if from_store:
        return stand_in_random(candidates, nblocks, rng, from_store, peers_hold, offset)
    rare = candidates & ~peers_hold
    return _first_at_or_after(rare or candidates, rng.randrange(nblocks))


#: by name, for ``bench_fleet.py --order``
ORDERS: dict[str, ChunkOrder] = {
    "random": stand_in_random,
    "stripe": stand_in_stripe,
    "rare": stand_in_rare,
}
