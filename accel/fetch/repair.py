"""Repair of a file whose SHA256 is wrong when no block digest says which bytes are.

With a manifest, every block is checked by blake3 as it streams, so a corrupt answer
costs one chunk. Without one (``accel get --sha256 H``), a flipped or shifted byte shows
only at the end, as a wrong SHA256 over the whole file, and starting over fails the same
way on an origin that corrupts a few answers in a hundred. Instead the file is cut into
*pieces* of about 1/64 of it: a finished chunk that small is a piece with the xxh3 the
download recorded for it, a longer one is cut and its pieces' first xxh3 read back from
disk (the bytes that download wrote; 64 MiB in a few tens of ms). Pieces are fetched
again until each has a *consensus*: the newest fetch agrees with an earlier one. The bytes on disk are always those of the newest complete fetch (each
refetch writes over the piece in place), so a settled piece holds bytes that two
independent answers agreed on. Pieces whose fetches disagree get the next fetch before
unchecked pieces get their second; whenever a fetch changed bytes on disk, the whole
file is hashed again (once the fetches in flight have landed), and the first match ends
the repair: the SHA256 alone says "verified", consensus only finds the candidates.

The repair spends at most a byte budget (``budget_factor`` times the file by default)
and fetches one piece at most ``max_votes`` times. It ends in one of three ways:

- the SHA256 matches: the file is verified;
- every piece is settled and the SHA256 still differs: the origin consistently serves
  other bytes (or the expected digest is wrong); refetching cannot help;
- the budget ran out, or some piece never got two agreeing answers: the ``.part`` and
  its checkpoint stay (``resumable``), so a rerun repairs again from there.

:class:`~accel.fetch.consensus.RepairPlan` is the pure policy (property-tested like
:mod:`accel.fetch.plan`); :func:`repair` drives it through the engine's worker pool.
It never decides that bytes are good without the SHA256, and never reads a socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

from accel.errors import AccelError, DownloadError, IntegrityError
from accel.fetch.checkpoint import DoneChunk, xxh3_of_range
from accel.fetch.consensus import BUDGET_FACTOR, MAX_VOTES, RepairPlan, cover, piece_size_for

if TYPE_CHECKING:
    from accel.fetch.messages import Task
    from accel.fetch.pool import Outcome
    from accel.fetch.slots import Shared

__all__ = ["repair"]

#: refetches in flight at once: each one still running when a hash matches is wasted
_PARALLEL = 4


async def repair(
    shared: Shared,
    *,
    url: str,
    part: Path,
    total: int,
    sha256: str,
    actual: str,
    records: MutableMapping[int, DoneChunk],
    task_for: Callable[[int, int], Task],
    on_progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    on_piece: Callable[[int, str, str], None] | None = None,
    budget_factor: float = BUDGET_FACTOR,
    max_votes: int = MAX_VOTES,
) -> str:
    """Refetch pieces of ``part`` until its SHA256 is ``sha256``; return that digest.

    ``actual`` is the SHA256 the download found (the mismatch that calls for a repair).

    ``records`` (the download's finished chunks, by start) give the pieces and their
    first vote; a chunk longer than a piece, and any range no chunk covers (a file
    fetched in one request), is cut into pieces whose first vote is read from disk, and
    ``records`` then holds one entry per piece. They are kept true to the disk: after
    every complete refetch, the piece's record holds the new xxh3, so a checkpoint saved
    after a failure (or a cancel) lets a rerun trust exactly the bytes it should.
    ``task_for(start, end)`` makes the request of a piece (into ``part``, at its offset),
    from whichever source the caller chooses; ``on_piece(start, xxh3, first)`` hears
    each complete refetch (``first``: the piece's first vote), so a caller with several
    sources can tell which one disagreed with two agreeing answers.

    Raises :class:`IntegrityError` when the repair cannot verify the file (``resumable``
    set when a rerun may still succeed), or the error of a piece whose requests keep
    failing, as a chunk's would.
    """
    emit = on_event or (lambda message: None)
    pieces = await asyncio.to_thread(_first_votes, part, total, records)
    largest = max((e - s for s, e, _ in pieces), default=0)
    plan = RepairPlan.start(
        pieces, budget=max(math.ceil(budget_factor * total), 3 * largest), max_votes=max_votes
    )
    emit(
        f"SHA256 mismatch and no block digests: refetching the file's {len(plan.pieces)} "
        f"pieces to find the corrupt ones (budget {plan.budget} bytes)"
    )
    busy: dict[int, asyncio.Task[tuple[str, int]]] = {}
    try:
        while True:
            while len(busy) < _PARALLEL:
                reserved = sum(plan.piece_at(s).length for s in busy)
                piece = plan.next_piece(busy, reserved)
                if piece is None:
                    break
                if piece.suspect:
                    emit(
                        f"bytes {piece.start}-{piece.end - 1}: two answers disagree; "
                        "fetching them again"
                    )
                busy[piece.start] = asyncio.ensure_future(
                    _fetch_piece(shared, task_for(piece.start, piece.end), on_progress)
                )
            if not busy:
                if not plan.unhashed:
                    break
                actual = await asyncio.to_thread(_sha256_of, part)
                if actual == sha256:
                    fixed = sum(1 for p in plan.pieces if p.votes[-1] != p.votes[0])
                    emit(f"repaired: {plan.spent} bytes refetched, {fixed} piece(s) were corrupt")
                    return actual
                plan = plan.hashed()
                continue
            done, _ = await asyncio.wait(busy.values(), return_when=asyncio.FIRST_COMPLETED)
            for start in [s for s, t in busy.items() if t in done]:
                task = busy.pop(start)
                try:
                    xxh3, spent = task.result()
                except _PieceFailed as failed:
                    plan = plan.charge(failed.spent)
                    raise failed.error from None
                plan = plan.fetched(start, xxh3, spent)
                p = plan.piece_at(start)
                if on_piece is not None:
                    on_piece(start, xxh3, p.votes[0])
                records[start] = DoneChunk(start=start, end=p.end, xxh3=xxh3)
    finally:
        for t in busy.values():
            t.cancel()
        if busy:
            await asyncio.gather(*busy.values(), return_exceptions=True)
    raise _give_up(plan, url=url, sha256=sha256, digest=actual)


def _give_up(plan: RepairPlan, *, url: str, sha256: str, digest: str) -> IntegrityError:
    """The error of a repair that ran out of things to try (``digest``: the file's
    SHA256 after the last change on disk)."""
    if plan.all_settled:
        return IntegrityError(
            f"{url}: SHA256 {digest} does not match the expected {sha256}, and every piece "
            f"of the file was fetched twice with the same bytes ({len(plan.repaired)} "
            "repaired): the server consistently sends other bytes",
            url=url,
            expected=sha256,
            actual=digest,
            hint="check the expected SHA256, or report the corrupt file to its owner",
        )
    first = plan.open_pieces[0]
    return IntegrityError(
        f"{url}: SHA256 {digest} does not match the expected {sha256}; the repair spent "
        f"{plan.spent} of its {plan.budget} bytes and {len(plan.open_pieces)} piece(s) "
        f"(first: bytes {first.start}-{first.end - 1}) never got two agreeing answers",
        url=url,
        expected=sha256,
        actual=digest,
        resumable=True,
        hint="rerun: the .part is kept and the repair goes on from there",
    )


class _PieceFailed(Exception):
    def __init__(self, error: AccelError, spent: int) -> None:
        super().__init__(error)
        self.error = error
        self.spent = spent


async def _fetch_piece(
    shared: Shared, task: Task, on_progress: Callable[[int, int], None] | None
) -> tuple[str, int]:
    """One complete fetch of a piece: ``(xxh3, bytes received by every attempt)``.

    Retryable failures back off and try again, as a chunk does (the engine's
    :class:`~accel.fetch.slots.RetryPolicy`).
    """
    spent = 0
    attempt = 0
    while True:
        attempt += 1
        await shared.slots.acquire()
        try:
            handle = shared.pool.submit(task)
        except BaseException:
            shared.slots.release()
            raise
        handle.on_progress = on_progress
        try:
            outcome: Outcome = await asyncio.shield(handle.done)
        except asyncio.CancelledError:
            shared.pool.cancel(handle)
            raise
        finally:
            shared.slots.release()
        end = outcome.end if outcome.end is not None else handle.position
        if on_progress is not None and end > handle.position:
            on_progress(handle.position, end)
        spent += max(0, end - task.start)
        error: AccelError | None = outcome.error
        if error is None and outcome.end != task.end:
            error = DownloadError(
                f"{task.url}: a worker finished bytes {task.start}-{outcome.end}, "
                f"expected up to {task.end}",
                url=task.url,
            )
        if error is None:
            return outcome.xxh3, spent
        if not outcome.retryable or not shared.retry.allows(attempt):
            raise _PieceFailed(error, spent)
        await asyncio.sleep(shared.retry.delay(attempt, outcome.retry_after))


def _first_votes(
    part: Path, total: int, records: MutableMapping[int, DoneChunk]
) -> list[tuple[int, int, str]]:
    """The pieces with their first vote: recorded chunks as recorded, the rest read
    from disk; ``records`` becomes one entry per piece (the disk holds those bytes)."""
    pieces = cover(total, [(c.start, c.end) for c in records.values()], piece_size_for(total))
    out: list[tuple[int, int, str]] = []
    fd = -1
    try:
        for start, end, known in pieces:
            if known:
                out.append((start, end, records[start].xxh3))
                continue
            if fd < 0:
                fd = os.open(part, os.O_RDONLY)
            out.append((start, end, xxh3_of_range(fd, start, end)))
    finally:
        if fd >= 0:
            os.close(fd)
    records.clear()
    records.update((s, DoneChunk(start=s, end=e, xxh3=x)) for s, e, x in out)
    return out


def _sha256_of(path: Path) -> str:
    # Plain reads, not a mapping: a disk error is an OSError here, never a SIGBUS.
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
