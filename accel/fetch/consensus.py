"""Which pieces of a file to fetch again, and when, to find its corrupt bytes.

The pure policy of :mod:`accel.fetch.repair` (values in, values out, no I/O, no clock,
property-tested like :mod:`accel.fetch.plan`). A *piece* is a byte range with the xxh3
of every complete fetch of it, oldest first; the bytes on disk are the newest fetch's.
A piece is *settled* when its newest fetch agrees with an earlier one (two independent
answers gave those bytes) and *suspect* when it was fetched again and the answers
disagree. :class:`RepairPlan` offers suspects first (a third answer settles them),
then unchecked pieces in file order; it holds back new fetches while a change on disk
awaits the file's SHA256 (``unhashed``), and it never offers a fetch that the byte
budget, less the fetches in flight, does not cover, nor more than ``max_votes``
answers for one piece. It never says "verified": only the SHA256 does.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace

__all__ = [
    "BUDGET_FACTOR",
    "MAX_PIECE",
    "MAX_VOTES",
    "MIN_PIECE",
    "Piece",
    "RepairPlan",
    "cover",
    "piece_size_for",
]

MiB = 1024 * 1024
#: what a repair may fetch, as a multiple of the file's size: one full second pass, the
#: third fetches of the pieces that disagree, and the faults of those requests
BUDGET_FACTOR = 1.5
#: complete fetches of one piece (the recorded one included) before it is undecidable
MAX_VOTES = 5
#: pieces are about 1/64 of the file, within these bounds: small enough that a third
#: fetch and the fetches in flight when a hash matches cost little, large enough that a
#: pass over the file is not thousands of requests
MIN_PIECE = 256 * 1024
MAX_PIECE = 1 * MiB


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` and the xxh3 of every complete fetch of them, oldest first.

    ``votes[0]`` is what the download wrote; the bytes on disk are those of ``votes[-1]``.
    """

    start: int
    end: int
    votes: tuple[str, ...]

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def settled(self) -> bool:
        """The newest fetch agrees with an earlier one: two answers gave these bytes."""
        return self.votes[-1] in self.votes[:-1]

    @property
    def suspect(self) -> bool:
        """Fetched again, and the fetches disagree: one of them was corrupt."""
        return len(self.votes) > 1 and not self.settled


@dataclass(frozen=True)
class RepairPlan:
    """Which pieces to fetch again, what that may cost, and when to hash the file.

    ``spent`` counts every byte received by the repair, failed attempts included;
    ``unhashed`` is True when some fetch changed bytes on disk since the last hash.
    """

    pieces: tuple[Piece, ...]
    budget: int
    spent: int = 0
    max_votes: int = MAX_VOTES
    unhashed: bool = False

    @classmethod
    def start(
        cls,
        pieces: Iterable[tuple[int, int, str]],
        *,
        budget: int,
        max_votes: int = MAX_VOTES,
    ) -> RepairPlan:
        """A plan over ``(start, end, recorded xxh3)`` pieces, sorted by start."""
        if max_votes < 2 or budget < 0:
            raise ValueError("max_votes >= 2 and budget >= 0 are required")
        ordered = tuple(Piece(s, e, (x,)) for s, e, x in sorted(pieces))
        for a, b in itertools.pairwise(ordered):
            if a.end > b.start:
                raise ValueError(f"pieces {a.start}-{a.end} and {b.start}-{b.end} overlap")
        if any(p.end <= p.start for p in ordered):
            raise ValueError("every piece must hold at least one byte")
        return cls(ordered, budget, max_votes=max_votes)

    # --- queries ---------------------------------------------------------------
    def piece_at(self, start: int) -> Piece:
        for p in self.pieces:
            if p.start == start:
                return p
        raise KeyError(start)

    def wanted(self, piece: Piece) -> bool:
        """Another fetch of ``piece`` could still tell something."""
        return not piece.settled and len(piece.votes) < self.max_votes

    def next_piece(self, busy: Collection[int] = (), reserved: int = 0) -> Piece | None:
        """The piece to fetch next, or None: nothing wanted, the budget (less the
        ``reserved`` bytes of the fetches in flight, keyed by start in ``busy``) does
        not cover it, or a change on disk awaits its hash (no new fetch before it).

        Suspects come first (a third answer settles them), then unchecked pieces in
        file order.
        """
        if self.unhashed:
            return None
        left = self.budget - self.spent - reserved
        candidates = [p for p in self.pieces if p.start not in busy and self.wanted(p)]
        candidates.sort(key=lambda p: (not p.suspect, p.start))
        for p in candidates:
            if p.length <= left:
                return p
        return None

    @property
    def all_settled(self) -> bool:
        return all(p.settled for p in self.pieces)

    @property
    def repaired(self) -> list[Piece]:
        """Settled pieces whose agreed bytes are not the ones the download wrote."""
        return [p for p in self.pieces if p.settled and p.votes[-1] != p.votes[0]]

    @property
    def open_pieces(self) -> list[Piece]:
        return [p for p in self.pieces if not p.settled]

    # --- transitions -------------------------------------------------------------
    def fetched(self, start: int, xxh3: str, spent: int) -> RepairPlan:
        """A fetch of the piece at ``start`` completed with ``xxh3``, costing ``spent``
        bytes (its failed attempts included); its bytes are now the ones on disk."""
        pieces = list(self.pieces)
        for i, p in enumerate(pieces):
            if p.start == start:
                changed = xxh3 != p.votes[-1]
                pieces[i] = replace(p, votes=(*p.votes, xxh3))
                return replace(
                    self,
                    pieces=tuple(pieces),
                    spent=self.spent + spent,
                    unhashed=self.unhashed or changed,
                )
        raise KeyError(start)

    def charge(self, spent: int) -> RepairPlan:
        """Bytes received by attempts that completed nothing."""
        return replace(self, spent=self.spent + spent)

    def hashed(self) -> RepairPlan:
        """The file was hashed again (and did not match)."""
        return replace(self, unhashed=False)


def piece_size_for(total: int) -> int:
    """About 1/64 of the file, in whole 64 KiB, between ``MIN_PIECE`` and ``MAX_PIECE``."""
    step = 64 * 1024
    return max(MIN_PIECE, min(MAX_PIECE, -(-total // 64 // step) * step))


def cover(
    total: int, recorded: Iterable[tuple[int, int]], piece_size: int
) -> list[tuple[int, int, bool]]:
    """Pieces partitioning ``[0, total)``: a recorded range of at most ``piece_size`` as
    it is (``True``: its recorded xxh3 is the first vote); longer recorded ranges and
    the gaps between them cut into pieces of at most ``piece_size`` (``False``)."""
    out: list[tuple[int, int, bool]] = []
    pos = 0
    for start, end in sorted(recorded):
        if start < pos or end > total or end <= start:
            raise ValueError(f"recorded range {start}-{end} overlaps or leaves [0, {total})")
        out += [(s, e, False) for s, e in _cut(pos, start, piece_size)]
        if end - start <= piece_size:
            out.append((start, end, True))
        else:
            out += [(s, e, False) for s, e in _cut(start, end, piece_size)]
        pos = end
    out += [(s, e, False) for s, e in _cut(pos, total, piece_size)]
    return out


def _cut(start: int, end: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(end, s + size)) for s in range(start, end, size)]
