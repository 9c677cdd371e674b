"""How many connections "auto" keeps: a pure policy fed one throughput window at a time.

Starts where the engine starts (16: from 8, S2 took 1.34x its S1 against 1.20x from
16, S1 the same, 1.69 / 1.71 s and 2.62 / 2.61 CPU-s) and doubles while a doubling buys
at least 1.5x the throughput. A doubling that buys 1.8x or more means each connection is capped (as CDNs
and ``limit_rate`` do): the next step goes straight to the ceiling. A doubling that
buys less than 1.5x is undone and the tuning stops: on a fast origin a few connections
fill the link and each extra one costs CPU.

The jump to the ceiling is judged differently. It multiplies the connections by more
than two, and what it buys is often bounded by something else (the machine's CPU, the
link): against per-connection caps of 25 MiB/s on two cores, 16 connections carried
430 MB/s and 64 carried 600 MB/s, 1.4x. Undoing that jump threw the 40% away. A jump
that buys at least 1.15x keeps the connections the measured total needs at the
per-connection rate measured before it, with a quarter more as headroom (here 28),
never fewer than before the jump and never more than the ceiling.

Never measures anything itself: :meth:`Tuner.observe` takes the window's rate and
whether every connection was busy, and answers the capacity to set (the engine's
``_tune`` loop feeds it). The window right after a change mixes two regimes and is
skipped; so are windows without enough demand to fill the connections. A level is
judged by the best of two windows: on a busy machine one 0.12 s window can miss a
report or two, and judged alone it undid a doubling that paid (S2 with helpers'
tests running beside it: the tuner stopped at 8 connections, 190 MB/s for 420).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Tuner", "capacity_for_sources"]

#: a doubling must buy this much to be kept and to try the next one
_DOUBLING_PAYS = 1.5
#: a doubling buying this much means each connection is capped: jump to the ceiling
_LINEAR = 1.8
#: a jump to the ceiling buying at least this much is kept, trimmed to what it needs
_JUMP_PAYS = 1.15
#: connections beyond the measured need, after a jump (one slow connection of several
#: must not become the limit)
_HEADROOM = 1.25
#: windows measured at each level, the best of them judged
_WINDOWS = 2


@dataclass
class Tuner:
    """The state of one engine's connection tuning; see the module docstring."""

    ceiling: int
    done: bool = False
    _baseline: float | None = None
    _before: int = 0
    _jumped: bool = False
    _settle: bool = True
    _seen: list[float] = field(default_factory=list)

    def observe(self, capacity: int, rate: float, *, busy: bool) -> int:
        """The capacity to use after a window of ``rate`` bytes/s at ``capacity``.

        ``busy``: every connection was in use during the window. Sets :attr:`done`
        when the tuning has ended (the answer is then final).
        """
        if self.done:
            return capacity
        if not busy or rate <= 0:
            self._settle = True
            self._seen.clear()
            return capacity
        if self._settle:
            self._settle = False
            return capacity
        self._seen.append(rate)
        if len(self._seen) < _WINDOWS:
            return capacity
        rate = max(self._seen)
        self._seen.clear()
        base = self._baseline
        if base is not None and rate < base * _DOUBLING_PAYS:
            self.done = True
            if self._jumped and rate >= base * _JUMP_PAYS:
                per_connection = base / self._before
                need = math.ceil(rate * _HEADROOM / per_connection)
                return max(self._before, min(capacity, need))
            return self._before  # the last step did not pay: undo it
        if capacity >= self.ceiling:
            self.done = True
            return capacity
        linear = base is not None and rate >= base * _LINEAR
        self._baseline, self._before, self._jumped = rate, capacity, linear
        self._settle = True
        return self.ceiling if linear else min(self.ceiling, capacity * 2)


def capacity_for_sources(wanted: Sequence[int], *, floor: int, ceiling: int) -> int | None:
    """The engine's connections while downloads of several sources run; None if none do.

    Those downloads say what their sources can use at once
    (:meth:`~accel.fetch.sources.SourcePolicy.wanted`: each mirror's trial requests,
    then its allowance), and that is what they get, between ``floor`` (what the engine
    starts with, for the downloads of one source beside them) and ``ceiling``. Doubling
    on the total throughput does not work there: a doubling made while a mirror is on
    trial sends most new connections to the other source and "buys" too little, and
    once each source is at its allowance the connections are never all busy, so the
    throughput tuner stopped two mirrors at 8 connections, one mirror's worth.
    """
    if not wanted:
        return None
    return max(floor, min(ceiling, sum(wanted)))
