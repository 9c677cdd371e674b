"""Which bytes of a file are missing, which are being fetched, which are done.

A pure state machine over byte ranges (aria2's ``BitfieldMan`` idea, h11's style): no
I/O, no clocks. The supervisor asks it for the next chunk, reports completions and
failures, and asks it to split the chunk with the most bytes left when connections go
idle near the end. At every moment the chunks partition ``[0, size)``: no byte is lost
and no byte belongs to two chunks. Split points are aligned to ``align`` (the manifest's
hash block size when known), so every block is verified by exactly one chunk.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field

__all__ = ["Chunk", "ChunkPlan", "ChunkState", "choose_chunk_size"]

MiB = 1024 * 1024


class ChunkState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"


@dataclass(eq=False)
class Chunk:
    """A byte range ``[start, end)`` of the file and what is happening to it."""

    start: int
    end: int
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    id: int = field(default=0)

    @property
    def length(self) -> int:
        return self.end - self.start


def choose_chunk_size(size: int, connections: int, align: int = 1) -> int:
    """A chunk size giving each connection a few chunks, between 1 and 64 MiB.

    Large enough that request overhead vanishes, small enough that the tail is short;
    the planner splits the slow tail anyway. All connections together hold at most
    about 64 MiB of unfinished chunks: that bounds what a kill -9 throws away and how
    far the running SHA256 can lag behind the last byte. Rounded up to ``align``.
    """
    n = max(1, connections)
    target = min(size // (n * 4), (64 * MiB) // n)
    target = max(1 * MiB, min(64 * MiB, target))
    return _round_up(target, align)


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align if align > 1 else n


class ChunkPlan:
    """The chunk map of one file: a partition of ``[0, size)`` into chunks.

    ``done`` ranges (from a checkpoint) are taken as finished. The other bytes are cut
    into ``chunk_size`` chunks, aligned to ``align``.
    """

    def __init__(
        self,
        size: int,
        chunk_size: int,
        *,
        align: int = 1,
        done: list[tuple[int, int]] | None = None,
    ) -> None:
        if size < 0 or chunk_size <= 0 or align <= 0:
            raise ValueError("size >= 0, chunk_size > 0 and align > 0 are required")
        self.size = size
        self.align = align
        self._next_id = 0
        self.chunks: list[Chunk] = []
        # Indexes, so that every transition and query costs O(log n) or less: a 1 GiB
        # file in 1 MiB chunks makes a thousand of each.
        self._pending: list[tuple[int, int, Chunk]] = []  # heap; stale entries skipped
        self._pending_count = 0
        self._active: dict[int, Chunk] = {}
        self._by_start: dict[int, Chunk] = {}
        self._done_bytes = 0
        self._done_count = 0
        self._prefix = 0
        chunk_size = _round_up(chunk_size, align)
        cursor = 0
        for start, end in sorted(done or []):
            if start < cursor or end > size or start >= end:
                raise ValueError(f"done range {start}-{end} overlaps or leaves [0, {size})")
            self._cut(cursor, start, chunk_size)
            self._add(start, end, ChunkState.DONE)
            cursor = end
        self._cut(cursor, size, chunk_size)
        self._advance_prefix()

    def _add(self, start: int, end: int, state: ChunkState) -> Chunk:
        chunk = Chunk(start, end, state, id=self._next_id)
        self._next_id += 1
        self.chunks.append(chunk)
        self._by_start[start] = chunk
        if state is ChunkState.PENDING:
            self._push(chunk)
        elif state is ChunkState.DONE:
            self._done_bytes += chunk.length
            self._done_count += 1
        return chunk

    def _push(self, chunk: Chunk) -> None:
        heapq.heappush(self._pending, (chunk.start, chunk.id, chunk))
        self._pending_count += 1

    def _cut(self, start: int, end: int, chunk_size: int) -> None:
        pos = start
        while pos < end:
            nxt = min(end, _round_up(pos + 1, chunk_size) if pos % chunk_size else pos + chunk_size)
            self._add(pos, nxt, ChunkState.PENDING)
            pos = nxt

    def _advance_prefix(self) -> None:
        while (c := self._by_start.get(self._prefix)) is not None and c.state is ChunkState.DONE:
            self._prefix = c.end

    # --- queries ---------------------------------------------------------------
    def pending_at(self, start: int) -> Chunk | None:
        """The pending chunk that starts at ``start``, if there is one."""
        c = self._by_start.get(start)
        return c if c is not None and c.state is ChunkState.PENDING else None

    @property
    def pending_count(self) -> int:
        return self._pending_count

    def active(self) -> list[Chunk]:
        return list(self._active.values())

    def pending(self) -> list[Chunk]:
        """The pending chunks, by start (what a choice among them reads)."""
        return sorted(
            (c for c in self._by_start.values() if c.state is ChunkState.PENDING),
            key=lambda c: c.start,
        )

    @property
    def done_bytes(self) -> int:
        return self._done_bytes

    @property
    def finished(self) -> bool:
        return self._done_count == len(self.chunks)

    def done_ranges(self) -> list[tuple[int, int]]:
        """Finished ranges, sorted, adjacent ones merged."""
        out: list[tuple[int, int]] = []
        for c in sorted(self.chunks, key=lambda c: c.start):
            if c.state is not ChunkState.DONE:
                continue
            if out and out[-1][1] == c.start:
                out[-1] = (out[-1][0], c.end)
            else:
                out.append((c.start, c.end))
        return out

    def done_prefix(self) -> int:
        """End of the contiguous finished prefix ``[0, n)``."""
        return self._prefix

    # --- transitions -------------------------------------------------------------
    def take(self, max_length: int | None = None) -> Chunk | None:
        """The lowest pending chunk, now active; None when nothing is pending.

        With ``max_length``, a longer chunk is cut (at an ``align`` multiple) and only
        its head is taken: the caller sizes chunks by the connections it has now.
        """
        while self._pending:
            _, _, c = heapq.heappop(self._pending)
            if c.state is ChunkState.PENDING:
                if max_length is not None:
                    at = c.start + _round_up(max(1, max_length), self.align)
                    if at < c.end:
                        self._add(at, c.end, ChunkState.PENDING)
                        c.end = at
                self._activate(c)
                return c
        return None

    def _activate(self, c: Chunk) -> None:
        c.state = ChunkState.ACTIVE
        c.attempts += 1
        self._pending_count -= 1
        self._active[c.id] = c

    def take_range(self, start: int, end: int) -> Chunk | None:
        """Make the pending chunk that starts at ``start`` active, cut to ``end``."""
        c = self._by_start.get(start)
        if c is None or c.state is not ChunkState.PENDING:
            return None
        if end < c.end:
            self._add(end, c.end, ChunkState.PENDING)
            c.end = end
        self._activate(c)  # its heap entry is stale now and skipped by take()
        return c

    def take_span(self, chunk: Chunk, start: int, end: int) -> Chunk:
        """Make bytes ``[start, end)`` of the pending ``chunk`` active (a choice of which
        bytes, not the lowest: :mod:`~accel.fetch.sources_order`); what is before and
        after stays pending. The active piece keeps the chunk's identity (its id and
        attempts), so what a chunk failed on follows the bytes it is about."""
        self._expect(chunk, ChunkState.PENDING)
        if not chunk.start <= start < end <= chunk.end:
            raise ValueError(f"{start}-{end} is not inside {chunk.start}-{chunk.end}")
        if start % self.align or (end % self.align and end != chunk.end):
            raise ValueError(f"{start}-{end} is not aligned to {self.align}")
        if end < chunk.end:
            self._add(end, chunk.end, ChunkState.PENDING)
            chunk.end = end
        if start > chunk.start:
            old = chunk.start
            chunk.start = start
            self._by_start[start] = chunk
            self._add(old, start, ChunkState.PENDING)  # takes _by_start[old] over
        self._activate(chunk)  # its heap entry is stale now and skipped by take()
        return chunk

    def complete(self, chunk: Chunk) -> None:
        self._expect(chunk, ChunkState.ACTIVE)
        chunk.state = ChunkState.DONE
        del self._active[chunk.id]
        self._done_bytes += chunk.length
        self._done_count += 1
        if chunk.start == self._prefix:
            self._advance_prefix()

    def fail(self, chunk: Chunk, *, written_to: int | None = None, refund: bool = False) -> Chunk:
        """Give an active chunk back to the pending set.

        ``refund``: the attempt does not count (it failed at a source other than the
        last resort: another source takes it, and the retry budget is the last
        resort's).

        Without block digests the bytes a failed attempt wrote cannot be trusted, so the
        whole chunk is fetched again; ``written_to`` is accepted for a future
        "keep the verified head" rule and ignored today.
        """
        del written_to
        self._expect(chunk, ChunkState.ACTIVE)
        chunk.state = ChunkState.PENDING
        if refund:
            chunk.attempts -= 1
        del self._active[chunk.id]
        self._push(chunk)
        return chunk

    def split_point(self, chunk: Chunk, position: int, min_piece: int) -> int | None:
        """Where to split an active chunk whose worker is at ``position``, or None.

        The point halves what is left, aligned up to ``align``, and leaves at least
        ``min_piece`` bytes on both sides of it.
        """
        self._expect(chunk, ChunkState.ACTIVE)
        position = max(chunk.start, min(position, chunk.end))
        at = _round_up(position + (chunk.end - position) // 2, self.align)
        if at - position < min_piece or chunk.end - at < min_piece:
            return None
        return at

    def split(self, chunk: Chunk, at: int) -> Chunk:
        """Cut an active chunk at ``at``; the tail ``[at, end)`` becomes a pending chunk."""
        self._expect(chunk, ChunkState.ACTIVE)
        if not chunk.start < at < chunk.end or at % self.align:
            raise ValueError(f"cannot split {chunk.start}-{chunk.end} at {at}")
        tail = self._add(at, chunk.end, ChunkState.PENDING)
        chunk.end = at
        return tail

    @staticmethod
    def _expect(chunk: Chunk, state: ChunkState) -> None:
        if chunk.state is not state:
            raise ValueError(f"chunk {chunk.start}-{chunk.end} is {chunk.state.value}")
