"""Sources as a repair's voters, and each source's figures for events and results.

Without block digests a wrong SHA256 starts the repair (:mod:`~accel.fetch.repair`),
which fetches pieces of the file again until two answers agree. With several sources
each refetch of a piece asks a source that has not answered for it yet, so two agreeing
answers come from two sources; once the file's SHA256 matches, every source whose answer
for a piece differs from the verified bytes (or from two agreeing answers, earlier)
loses a vote, and the second loss quarantines it (:meth:`SourcePolicy.disagreed`).
A part of :class:`~accel.fetch.supervisor.FileDownload`, as the race is.
"""

from __future__ import annotations

import time

from accel.fetch.messages import Task
from accel.fetch.sources import vote_losers
from accel.fetch.sources_race import TailRace
from accel.fetch.types import SourceFigure

__all__ = ["SourceVoters"]


class SourceVoters(TailRace):
    """The repair's source choice and vote keeping (see the module docstring)."""

    #: the source of each finished chunk not fetched from the first one (by start)
    done_src: dict[int, int]
    #: a repair's answers per piece start: (source, xxh3; "" while in flight)
    votes: dict[int, list[tuple[int, str]]]
    #: (piece start, source) whose lost vote was counted already
    charged: set[tuple[int, int]]

    def source_figures(self) -> tuple[SourceFigure, ...]:
        """Each source's figures, when there is more than one (else nothing)."""
        if len(self.policy) == 1:
            return ()
        return tuple(
            SourceFigure(
                url=s.url,
                bytes=s.served,
                discarded=s.discarded,
                rate_bps=s.rate or 0.0,
                active=s.active,
                chunks=s.chunks,
                errors=s.failures,
                bad_blocks=s.bad_blocks,
                quarantined=s.quarantined,
            )
            for s in self.policy.sources
        )

    def _repair_task(self, start: int, end: int) -> Task:
        """A repair's request of a piece: from a source that has not answered for it
        yet when there is one, so that two agreeing answers come from two sources."""
        votes = self.votes.setdefault(start, [])
        if not votes:
            votes.append((self._source_of(start), ""))  # the download's answer
        used = {src for src, _ in votes}
        src = self.policy.pick(time.monotonic(), exclude=used)
        if src is None:
            src = self.policy.pick(time.monotonic()) or 0
        votes.append((src, ""))  # its xxh3 comes with _on_piece
        return self._task(start, end, src)

    def _source_of(self, start: int) -> int:
        """The source that fetched the byte at ``start`` in the download."""
        best = max((s for s in self.done_src if s <= start), default=None)
        return self.done_src[best] if best is not None else 0

    def _on_piece(self, start: int, xxh3: str, first: str) -> None:
        """A repair fetched the piece at ``start`` (``first``: the download's answer for
        it): once two answers agree, each source whose answer differed loses a vote
        (sources.py: the second loss quarantines it)."""
        votes = self.votes.setdefault(start, [(self._source_of(start), first)])
        if votes[0][1] == "":
            votes[0] = (votes[0][0], first)
        i = next((i for i, (_, x) in enumerate(votes) if x == ""), None)
        if i is None:
            votes.append((0, xxh3))
        else:
            votes[i] = (votes[i][0], xxh3)
        for src in vote_losers(votes):
            if (start, src) in self.charged:
                continue
            self.charged.add((start, src))
            before = self.policy[src].quarantined
            self.policy = self.policy.disagreed(src, f"its bytes at {start} lost a vote")
            self._say_quarantined(
                src, before, f"its bytes at {start} disagree with two agreeing answers"
            )

    def _charge_wrong_answers(self) -> None:
        """After a repair the SHA256 verified: the bytes on disk are right, so every
        source whose answer for a piece differs from them lost that vote."""
        for start, votes in self.votes.items():
            final = next((x for _, x in reversed(votes) if x), "")
            for src, x in votes:
                if x and x != final and (start, src) not in self.charged:
                    self.charged.add((start, src))
                    before = self.policy[src].quarantined
                    self.policy = self.policy.disagreed(src, f"its bytes at {start} were wrong")
                    self._say_quarantined(
                        src, before, f"its bytes at {start} differ from the verified file's"
                    )
