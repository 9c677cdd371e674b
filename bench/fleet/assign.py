"""The node's own chunk order, ``accel.fetch.sources_order.assign``, when accel has it.

Issue 20's node side (branch ``peerfetch``) decides source and block together:
``assign(policy, pending, block_size=, now=, order=, front=)`` over a
:class:`~accel.fetch.sources.SourcePolicy` whose peers carry their ``?have`` bitmap
(``SourceState.have``). :func:`available` says whether this accel has it (main has, since
the peerfetch merge); ``simulate(..., real_order=True)`` (``bench_fleet.py --policies
real``) runs it, imported as it is, instead of the injected stand-in of
:mod:`bench.fleet.order`. A block bitmap here is the same Python int the real ``Have`` holds.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import replace
from typing import Any

from accel.fetch.sources import SourcePolicy, SourceState

__all__ = ["RealOrder", "available"]


def available() -> bool:
    """accel has the node's chunk order (issue 20's ``sources_order``)."""
    return importlib.util.find_spec("accel.fetch.sources_order") is not None


class RealOrder:
    """The calls the simulation makes into ``sources_order`` for one model."""

    def __init__(self, nblocks: int, piece: int, size: int) -> None:
        self._order: Any = importlib.import_module("accel.fetch.sources_order")
        self._have: Any = importlib.import_module("accel.fetch.sources_have").Have
        self._span = self._order.Span
        self.piece = piece
        self.size = size
        self.nblocks = nblocks
        #: (first piece, pieces) -> the Span of that run
        self._spans: dict[tuple[int, int], Any] = {}
        #: per node, its last call that got None: (policy, want, front, when)
        self._idle: dict[int, tuple[SourcePolicy, int, int | None, float]] = {}
        self.calls = 0
        self.repeats = 0

    def block_order(self, seed: int) -> Any:
        """A node's own seeded order of the blocks (``BlockOrder.shuffled``)."""
        return self._order.BlockOrder.shuffled(self.nblocks, seed)

    def store_policy(self, max_connections: int) -> SourcePolicy:
        """The store alone, peers expected (the node asks the tracker at once)."""
        policy = SourcePolicy.of(["store"], max_connections=max_connections)
        return policy.expecting(True)

    def peer(self, url: str, max_connections: int, bits: int) -> SourceState:
        """A peer that has answered its first ``?have``."""
        return SourceState(
            url, max_connections=max_connections, peer=True, have=self._have(bits), heard=True
        )

    def with_have(self, policy: SourcePolicy, i: int, bits: int) -> SourcePolicy:
        """Source ``i``'s bitmap is now ``bits`` (a fresh ``?have``)."""
        sources = list(policy.sources)
        sources[i] = replace(sources[i], have=self._have(bits))
        return replace(policy, sources=tuple(sources))

    def with_haves(self, policy: SourcePolicy, held: list[int]) -> SourcePolicy:
        """Every peer's bitmap is now ``held[i]`` (a ``?have`` round; the last resort's
        entry is not read): the same value as :meth:`with_have` peer by peer, but one
        new policy per round, and none when no bitmap changed (10,000 nodes each ask
        ~20 peers twice a simulated second: the copies were 65% of the run)."""
        sources = policy.sources
        new: list[SourceState] | None = None
        for i, s in enumerate(sources):
            if s.last_resort or (s.have is not None and s.have.bits == held[i]):
                continue
            if new is None:
                new = list(sources)
            new[i] = replace(s, have=self._have(held[i]))
        return policy if new is None else replace(policy, sources=tuple(new))

    def choose(
        self,
        policy: SourcePolicy,
        want: int,
        now: float,
        order: Any,
        front: int | None,
        node: int = -1,
    ) -> tuple[int, int] | None:
        """(source, block) for the next request of a node lacking ``want``, or None.

        ``node`` (>= 0, the caller's id): ``assign`` is pure and reads ``now`` only
        through ``SourceState.usable`` (``resting_until <= now``), so a call with the
        same policy (by value), ``want`` and ``front`` as this node's last call that
        got None, no source's rest having ended since, gets None again without the
        call: a node whose peers hold nothing yet, polling their ``?have`` while it
        reads the store (10,000 nodes: 20,000 such calls per simulated second)."""
        if node >= 0:
            hit = self._idle.get(node)
            if (
                hit is not None
                and hit[1] == want
                and hit[2] == front
                and hit[0] == policy
                and not any(hit[3] < s.resting_until <= now for s in policy.sources)
            ):
                self.repeats += 1
                return None
        self.calls += 1
        got = self._assign(policy, want, now, order, front)
        if node >= 0:
            if got is None:
                self._idle[node] = (policy, want, front, now)
            else:
                self._idle.pop(node, None)
        return got

    def _assign(
        self, policy: SourcePolicy, want: int, now: float, order: Any, front: int | None
    ) -> tuple[int, int] | None:
        # the pending pieces as runs, one span each: every request is one piece (limits),
        # so a run's span gives the answers one span per piece gives (the chunk id is
        # not read back), with a fifth of the spans; each run's Span made once
        pending = []
        bits = want
        spans = self._spans
        while bits:
            lo = (bits & -bits).bit_length() - 1
            above = bits >> lo
            n = (above ^ (above + 1)).bit_length() - 1  # the run's length
            sp = spans.get((lo, n))
            if sp is None:
                sp = spans[lo, n] = self._span(
                    lo, lo * self.piece, min(self.size, (lo + n) * self.piece)
                )
            pending.append(sp)
            bits ^= ((1 << n) - 1) << lo
        got = self._order.assign(
            policy,
            pending,
            block_size=self.piece,
            now=now,
            order=order,
            limits=[self.piece] * len(policy.sources),
            front=front,
        )
        if got is None:
            return None
        return int(got.source), int(got.start // self.piece)
