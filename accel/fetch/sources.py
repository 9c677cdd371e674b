"""Where a file's bytes come from: several sources, each measured, none trusted.

A download reads the same bytes from several *sources*: the URL it was given (a hub's,
which may redirect to a presigned store URL), the mirrors a manifest lists and the
``--mirror`` URLs of ``accel get``. Content identity across sources is the size and the
digests the caller expects, never a source's word: each answer is held to them.

This module is the pure policy (values in, values out: no I/O, no clock of its own, the
caller passes ``now``), property-tested like :mod:`~accel.fetch.plan`, so a fleet
simulation can import it as it is. :class:`SourcePolicy` holds one :class:`SourceState`
per source and decides who fetches the next chunk, as aria2's adaptive selector does:

- a source nobody has measured gets ``TRIAL_REQUESTS`` chunks at once (its
  measurement) and no more before one ends well: a mirror serves the whole file, and
  one connection until its first chunk ended left a fast mirror nearly idle for the
  first half second of a 5 s download; a peer, or a source on probation after a bad
  block, gets one;
- otherwise the source whose measured throughput per connection, shared by one more
  connection than it has running, is the highest gets the chunk (``rate / (active +
  1)``): the fastest get the next chunks, and equally fast sources share the
  connections evenly instead of one taking all of them while the others idle (a
  mirror's total is capped as surely as its connections are); at most
  ``max_connections`` each, and no more than a mirror's total needs
  (:meth:`SourcePolicy.observed`: while the bytes per second all its connections
  bring stay at ``SATURATED`` of their number times its best rate per connection or
  more, it may have one more; once they fall short (its total is capped), no more than
  that total needs at its best rate, plus ``HEADROOM``. Sixteen connections to a
  mirror that eight fill left some of them starved for seconds, and every byte after
  a starved chunk waited for it in the SHA256 pass);
- a source slower per connection than ``MIN_SHARE`` of the best usable one gets no
  chunk at all (its chunks would be the tail; the race of
  :mod:`~accel.fetch.sources_race` takes back the one it may hold);
- a chunk whose blake3 block fails demotes its source (its measured rate quartered,
  and one request at a time until one ends well); a second one quarantines it for the
  rest of the download;
- a source that fails requests in a row (resets, timeouts, 5xx) rests for a while that
  grows with each failure; one that answers with another file (404, a changed ETag, a
  size of its own) is quarantined at once;
- the *last resort* (the hub's own URL) is never rested nor quarantined: a download
  never fails while it still answers. Its failures go to the engine's retry policy;
- a *peer* (a node serving what it holds) may hold only some blocks: its
  :class:`~accel.fetch.sources_have.Have` bitmap, refreshed by the caller, and no chunk
  ever goes to a source that does not hold all of its blocks. A peer that says it
  lacks a block after all (``404 block_not_held``) is no failure: those blocks leave
  its bitmap until the next refresh, and the chunk goes elsewhere. Which chunk each
  source gets when peers are there is :mod:`~accel.fetch.sources_order`'s.

It never decides whether bytes are good (the worker's blake3 checks and the final
SHA256 do), and never reads a socket.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from accel.fetch.sources_have import Have

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "TRIAL_REQUESTS",
    "SourcePolicy",
    "SourceState",
    "vote_losers",
]

#: connections to one source at once (aria2's ``--max-connection-per-server`` idea)
DEFAULT_MAX_CONNECTIONS = 16
#: weight of the newest measurement in a source's throughput average (EWMA)
ALPHA = 0.4
#: requests a mirror (a whole-file source) nobody has measured gets at once; the caller
#: ranks it by their rate so far within a fraction of a second (a slow mirror's trial
#: chunks are raced back by sources_race.py)
TRIAL_REQUESTS = 4
#: connections beyond what a mirror's measured total needs (its allowance)
HEADROOM = 1
#: a source whose connections together bring less than this share of their number
#: times its best rate per connection has a capped total (they share it)
SATURATED = 0.75
#: a bad blake3 block divides the source's measured rate by this
DEMOTE = 4.0
#: bad blocks that quarantine a source
QUARANTINE_AFTER = 2
#: a source slower per connection than this share of the best usable one gets no chunk
#: (a 10x slower mirror's chunk would be the download's tail; it adds 10% at most)
MIN_SHARE = 0.25
#: failed requests in a row after which a source rests
REST_AFTER = 2
#: the longest rest, in seconds
MAX_REST_S = 30.0


@dataclass(frozen=True)
class SourceState:
    """One source as the policy sees it.

    ``rate`` is the EWMA of the throughput of its finished requests (bytes per second
    per connection; None: not measured yet); ``served`` counts every byte it sent
    (``discarded``: those thrown away: a failed block, a dead connection's partial
    chunk); ``errors`` counts failed requests in a row, ``failures`` all of them.
    """

    url: str
    last_resort: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    active: int = 0
    rate: float | None = None
    #: the highest its rate has been: what one connection of it carries
    peak: float | None = None
    #: connections worth running to it (None: ``max_connections``): ``observed``
    target: int | None = None
    served: int = 0
    discarded: int = 0
    chunks: int = 0
    errors: int = 0
    failures: int = 0
    bad_blocks: int = 0
    quarantined: bool = False
    reason: str = ""
    resting_until: float = 0.0
    #: a block of it failed and no request of it has ended well since: one at a time
    probation: bool = False
    #: a peer: it holds only the blocks of :attr:`have` (None: the whole file, as the
    #: hub and mirrors do), as its last ``?have`` answer said
    peer: bool = False
    have: Have | None = None
    #: a peer that has answered ``?have`` at least once (it is there and serving)
    heard: bool = False
    #: ``404 block_not_held`` answers (no failure: its bitmap was older than its disk)
    not_held: int = 0
    #: the blocks it answered ``block_not_held`` for: not asked of it again in this
    #: download, whatever its bitmap says next (else a bitmap that keeps claiming them
    #: would send the same chunk back to it forever)
    lacking: Have = field(default_factory=Have)

    def holds(self, first: int, end: int) -> bool:
        """It holds every block of ``[first, end)`` (block indexes)."""
        return self.have is None or self.have.covers(first, end)

    def usable(self, now: float) -> bool:
        """May get a request now, capacity aside."""
        if self.last_resort:
            return True
        return not self.quarantined and self.resting_until <= now

    @property
    def trial(self) -> int:
        """Requests it may have at once before one ends (or is ranked): a mirror not
        measured yet ``TRIAL_REQUESTS`` (within its cap); a peer (it may hold little)
        and a source on probation (its bytes just failed) one."""
        if self.peer or self.probation:
            return 1
        return max(1, min(TRIAL_REQUESTS, self.max_connections))

    @property
    def allowance(self) -> int:
        """Connections worth running to it now (a peer: ``max_connections``), never
        fewer than its trial requests; see :meth:`SourcePolicy.observed`."""
        if self.peer or self.target is None:
            return self.max_connections
        return max(min(self.trial, self.max_connections), min(self.max_connections, self.target))

    @property
    def measuring(self) -> bool:
        """Its trial requests (its first, or its first since a bad block) are running:
        no more before one says how fast, or how honest, it is. A mirror ranked by
        its first requests' rate so far (:meth:`SourcePolicy.estimated`) is still on
        trial until one of them ends well: a fast liar would otherwise get every
        connection before its first block fails."""
        unproven = self.rate is None or (self.chunks == 0 and not self.peer)
        return (unproven or self.probation) and self.active >= self.trial


@dataclass(frozen=True)
class SourcePolicy:
    """Every source of one download and what the policy knows of each (index = id)."""

    sources: tuple[SourceState, ...]
    #: peers may come while the download runs (the caller looks for them): chunks go
    #: by :mod:`~accel.fetch.sources_order` even before one is known
    expect_peers: bool = False

    @classmethod
    def of(
        cls,
        urls: Sequence[str],
        *,
        last_resort: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        peers: Sequence[str] = (),
    ) -> SourcePolicy:
        """Sources for ``urls`` then ``peers`` (duplicates dropped, first kept);
        ``urls[last_resort]`` is the one never given up. A peer holds nothing until
        :meth:`holds` says otherwise."""
        if not urls:
            raise ValueError("a download needs at least one source")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        keep = urls[last_resort]
        seen: list[str] = []
        for u in [*urls, *peers]:
            if u not in seen:
                seen.append(u)
        whole = set(urls)
        return cls(
            tuple(
                SourceState(u, last_resort=u == keep, max_connections=max_connections)
                if u in whole
                else SourceState(u, max_connections=max_connections, peer=True, have=Have())
                for u in seen
            )
        )

    def __len__(self) -> int:
        return len(self.sources)

    def with_peer(self, url: str) -> SourcePolicy:
        """One more source, a peer holding nothing yet (found while the download runs);
        the others keep their indexes. A URL already there changes nothing."""
        if any(s.url == url for s in self.sources):
            return self
        cap = max(
            (s.max_connections for s in self.sources if not s.last_resort),
            default=DEFAULT_MAX_CONNECTIONS,
        )
        return replace(
            self,
            sources=(*self.sources, SourceState(url, max_connections=cap, peer=True, have=Have())),
        )

    def __getitem__(self, i: int) -> SourceState:
        return self.sources[i]

    @property
    def partial(self) -> bool:
        """Some source is a peer (chunks then go by :mod:`~accel.fetch.sources_order`)."""
        return self.expect_peers or any(s.peer for s in self.sources)

    def expecting(self, peers: bool) -> SourcePolicy:
        """Peers may (still) come, or no longer."""
        return replace(self, expect_peers=peers)

    # --- choosing ------------------------------------------------------------------
    def pick(
        self, now: float, exclude: Collection[int] = (), blocks: tuple[int, int] | None = None
    ) -> int | None:
        """The source for the next chunk, or None when every usable one is busy.

        ``exclude``: sources not to use for this chunk (those it failed on, say). The
        last resort is offered when nothing else can take the chunk, even while its
        first request is still measuring it or the chunk failed there before.
        ``blocks``: the chunk's block indexes ``[first, end)``; a peer is offered only
        a chunk it holds every block of (and none without ``blocks``).
        """
        usable = [
            i
            for i, s in enumerate(self.sources)
            if s.usable(now) and (s.holds(*blocks) if blocks is not None else not s.peer)
        ]
        best = max((self.sources[i].rate or 0.0 for i in usable), default=0.0)
        fast = [i for i in usable if self._fast_enough(i, best)]
        free = [i for i in fast if self.sources[i].active < self.sources[i].allowance]
        choice = self._best([i for i in free if i not in exclude and not self.sources[i].measuring])
        if choice is None:
            # the last resort, when nothing else may take the chunk: even while it is
            # measured, after the chunk failed there, and slow or not for a chunk that
            # failed elsewhere or when it is all there is
            anyway = len(usable) == 1 or bool(exclude)
            choice = next(
                (i for i in (usable if anyway else free) if self.sources[i].last_resort), None
            )
            if choice is not None and self.sources[choice].active >= self[choice].max_connections:
                choice = None
        return choice

    def _fast_enough(self, i: int, best: float) -> bool:
        rate = self.sources[i].rate
        return rate is None or rate >= MIN_SHARE * best

    def _best(self, candidates: list[int]) -> int | None:
        if not candidates:
            return None
        untested = [i for i in candidates if self.sources[i].rate is None]
        if untested:  # their trial requests, spread over them
            return min(untested, key=lambda i: (self.sources[i].active, i))
        return max(candidates, key=lambda i: (self._share(i), -self.sources[i].active, -i))

    def _share(self, i: int) -> float:
        s = self.sources[i]
        return (s.rate or 0.0) / (s.active + 1)

    def _score(self, i: int) -> float:
        s = self.sources[i]
        return s.rate or 0.0

    def wanted(self, now: float) -> int:
        """Connections its sources could use at once now: for each usable mirror (or
        the URL) fast enough to get chunks, its trial requests while on trial, else its
        allowance. What an engine-wide connection tuner can grow to for this download:
        beyond it, more connections only wait (a doubling that "buys nothing" then says
        the sources are at their allowance, not that the link is full)."""
        usable = [s for s in self.sources if s.usable(now) and not s.peer]
        best = max((s.rate or 0.0 for s in usable), default=0.0)
        total = 0
        for s in usable:
            if s.rate is not None and s.rate < MIN_SHARE * best:
                continue
            unproven = s.rate is None or s.chunks == 0 or s.probation
            total += min(s.trial, s.max_connections) if unproven else s.allowance
        return total

    def fastest(
        self, now: float, exclude: Collection[int] = (), blocks: tuple[int, int] | None = None
    ) -> int | None:
        """The usable measured source with the highest rate that has a free
        connection (for the tail race) and holds ``blocks`` (a peer: only with
        ``blocks`` given), or None."""
        free = [
            i
            for i, s in enumerate(self.sources)
            if i not in exclude
            and (s.holds(*blocks) if blocks is not None else not s.peer)
            and s.usable(now)
            and s.active < s.allowance
            and s.rate is not None
        ]
        return max(free, key=self._score) if free else None

    def seconds_for(self, i: int, nbytes: int) -> float | None:
        """How long source ``i`` would take for ``nbytes`` on one connection."""
        rate = self.sources[i].rate
        return nbytes / rate if rate else None

    @property
    def quarantined(self) -> list[int]:
        return [i for i, s in enumerate(self.sources) if s.quarantined]

    # --- transitions -------------------------------------------------------------
    def _set(self, i: int, state: SourceState) -> SourcePolicy:
        sources = list(self.sources)
        sources[i] = state
        return replace(self, sources=tuple(sources))

    def started(self, i: int) -> SourcePolicy:
        """A request to source ``i`` was sent."""
        s = self.sources[i]
        return self._set(i, replace(s, active=s.active + 1))

    def estimated(self, i: int, nbytes: int, seconds: float) -> SourcePolicy:
        """A first request to ``i`` has run ``seconds`` and brought ``nbytes``: enough to
        rank the source by (its rate so far) before that request ends, so a fast
        mirror does not wait a whole block's time for its second connection. Only
        for a source not measured yet; a finished request measures it properly."""
        s = self.sources[i]
        if s.rate is not None or nbytes <= 0 or seconds <= 0:
            return self
        return self._set(i, replace(s, rate=nbytes / seconds))

    def finished(self, i: int, nbytes: int, seconds: float) -> SourcePolicy:
        """A request to ``i`` ended well: ``nbytes`` in ``seconds`` (its measurement)."""
        s = self.sources[i]
        rate, peak = s.rate, s.peak
        if nbytes > 0 and seconds > 0:
            sample = nbytes / seconds
            rate = sample if rate is None else (1 - ALPHA) * rate + ALPHA * sample
            peak = max(peak or 0.0, rate)
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                rate=rate,
                peak=peak,
                served=s.served + max(0, nbytes),
                chunks=s.chunks + 1,
                errors=0,
                probation=False,
            ),
        )

    def observed(self, i: int, total: float, connections: int | None = None) -> SourcePolicy:
        """``i``'s connections (``connections`` of them all along, its ``active`` by
        default) brought ``total`` bytes per second lately: its allowance grows by one
        while that holds up to ``SATURATED`` of their number at its best rate per
        connection, and is cut to what ``total`` needs at that rate (plus
        ``HEADROOM``) when it falls short. (The requests that end are the fast ones:
        the rate they end with cannot show the starved ones, the total does.)"""
        s = self.sources[i]
        n = s.active if connections is None else min(connections, s.active)
        if s.peer or not s.peak or n <= 0 or total < 0:
            return self
        if total >= SATURATED * n * s.peak:
            target = max(s.target or 0, s.active + HEADROOM)
        else:
            target = math.ceil(total / s.peak) + HEADROOM
        return self._set(i, replace(s, target=min(target, s.max_connections)))

    def holding(self, i: int, have: Have | None) -> SourcePolicy:
        """Peer ``i``'s ``?have`` answered ``have`` (None: it holds the whole file, a
        server that does not know ``?have``)."""
        s = self.sources[i]
        if have is not None and s.lacking.bits:
            have = Have(have.bits & ~s.lacking.bits)
        elif have is None and s.lacking.bits:
            have = Have()  # "the whole file", after refusing blocks of it: nothing is sure
        return self._set(i, replace(s, have=have, heard=True))

    def unheard(self, i: int) -> SourcePolicy:
        """Peer ``i`` gave no ``?have`` answer: it holds nothing until it answers again
        (so nothing waits on it and the hub takes its blocks)."""
        s = self.sources[i]
        return self._set(i, replace(s, have=Have(), heard=False))

    def lacked(self, i: int, first: int, end: int, nbytes: int = 0) -> SourcePolicy:
        """Peer ``i`` answered ``404 block_not_held`` for blocks ``[first, end)``: no
        failure of the source (its bitmap was older than its disk); those blocks leave
        its bitmap until its next ``?have`` says otherwise."""
        s = self.sources[i]
        # A peer that said "whole" and now lacks a block: nothing is known until the
        # next ?have says what it holds
        have = s.have.without(first, end) if s.have is not None else Have()
        refused = Have.first(end).without(0, first)
        nbytes = max(0, nbytes)
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                have=have,
                lacking=Have(s.lacking.bits | refused.bits),
                served=s.served + nbytes,
                discarded=s.discarded + nbytes,
                not_held=s.not_held + 1,
            ),
        )

    def ended(self, i: int, nbytes: int, *, kept: bool = True) -> SourcePolicy:
        """A request to ``i`` ended without a verdict on the source (cancelled, or lost
        a race): its bytes are counted, its rate is not changed."""
        s = self.sources[i]
        nbytes = max(0, nbytes)
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                served=s.served + nbytes,
                discarded=s.discarded + (0 if kept else nbytes),
            ),
        )

    def failed(self, i: int, nbytes: int, now: float, seconds: float = 0.0) -> SourcePolicy:
        """A request to ``i`` failed on the network's side (reset, timeout, 5xx, a short
        body): the ``nbytes`` it sent are discarded; failures in a row make it rest
        (``REST_AFTER`` of them: one second, doubling up to ``MAX_REST_S``)."""
        s = self.sources[i]
        errors = s.errors + 1
        rest = s.resting_until
        if errors >= REST_AFTER and not s.last_resort:
            rest = now + min(MAX_REST_S, 2.0 ** (errors - REST_AFTER))
        rate = s.rate
        if rate is not None:
            rate = rate / 2
        elif nbytes > 0 and seconds > 0:
            rate = nbytes / seconds / 2
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                rate=rate,
                served=s.served + max(0, nbytes),
                discarded=s.discarded + max(0, nbytes),
                errors=errors,
                failures=s.failures + 1,
                resting_until=rest,
            ),
        )

    def corrupt(self, i: int, nbytes: int) -> SourcePolicy:
        """A blake3 block from ``i`` failed: its ``nbytes`` are discarded, the source is
        demoted, and quarantined at the ``QUARANTINE_AFTER``-th such block (unless it
        is the last resort)."""
        s = self.sources[i]
        bad = s.bad_blocks + 1
        gone = bad >= QUARANTINE_AFTER and not s.last_resort
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                rate=(s.rate or 0.0) / DEMOTE,
                served=s.served + max(0, nbytes),
                discarded=s.discarded + max(0, nbytes),
                bad_blocks=bad,
                failures=s.failures + 1,
                quarantined=s.quarantined or gone,
                reason=f"{bad} corrupt blocks" if gone else s.reason,
                probation=True,
            ),
        )

    def refused(self, i: int, nbytes: int, reason: str) -> SourcePolicy:
        """``i`` answered with another file or none (404, a changed ETag, another size):
        quarantined now, unless it is the last resort (then only counted)."""
        s = self.sources[i]
        return self._set(
            i,
            replace(
                s,
                active=max(0, s.active - 1),
                served=s.served + max(0, nbytes),
                discarded=s.discarded + max(0, nbytes),
                failures=s.failures + 1,
                errors=s.errors + 1,
                quarantined=s.quarantined or not s.last_resort,
                reason=reason if not s.last_resort else s.reason,
            ),
        )

    def disagreed(self, i: int, reason: str) -> SourcePolicy:
        """Without block digests: bytes from ``i`` lost a vote against two agreeing
        answers (:mod:`~accel.fetch.repair`): demoted like a bad block, quarantined at
        the ``QUARANTINE_AFTER``-th loss (unless it is the last resort)."""
        s = self.sources[i]
        bad = s.bad_blocks + 1
        gone = bad >= QUARANTINE_AFTER and not s.last_resort
        return self._set(
            i,
            replace(
                s,
                rate=(s.rate or 0.0) / DEMOTE,
                bad_blocks=bad,
                quarantined=s.quarantined or gone,
                reason=reason if gone and not s.quarantined else s.reason,
            ),
        )


def vote_losers(votes: Sequence[tuple[int, str]]) -> list[int]:
    """The sources whose answer differs from one two answers agree on.

    ``votes`` are ``(source, xxh3)`` answers for one piece (``""``: not in yet). Without
    two agreeing answers nobody is known to be wrong: ``[]``. With two agreeing values
    (a three-way split cannot happen before a third answer), the agreed value is the
    one given most often, ties going to the earliest agreement.
    """
    counts: dict[str, int] = {}
    for _, x in votes:
        if x:
            counts[x] = counts.get(x, 0) + 1
    agreed = [x for x, n in counts.items() if n >= 2]
    if not agreed:
        return []
    top = max(agreed, key=lambda x: counts[x])
    out: list[int] = []
    for src, x in votes:
        if x and x != top and src not in out:
            out.append(src)
    return out
