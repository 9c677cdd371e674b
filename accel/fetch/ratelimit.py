"""The token bucket that enforces ``--limit-rate``, as a pure function.

Written as GCRA (the "virtual scheduling" form of a token bucket): the whole state is
one number, the theoretical arrival time ``tat``. Because the state is a single float,
all worker processes share one budget by keeping ``tat`` in shared memory under a lock
(see ``worker.py``); this module only does the arithmetic, on whatever clock it is given,
so tests drive it with a fake clock. ``time.monotonic`` is system-wide on Linux, so the
processes agree on "now".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass(frozen=True)
class TokenBucket:
    """``rate`` bytes per second with bursts of at most ``burst`` bytes.

    Over any window of ``t`` seconds at most ``rate * t + burst`` bytes are granted.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")

    @classmethod
    def for_rate(cls, rate: float) -> TokenBucket:
        """The default burst: a quarter second of traffic, at least 64 KiB.

        A quarter second keeps a 10 s average within 2.5% even after an idle period.
        """
        return cls(rate=rate, burst=max(64 * 1024, rate * 0.25))

    def consume(self, tat: float, now: float, nbytes: int) -> tuple[float, float]:
        """Account ``nbytes`` at ``now``; return ``(new_tat, delay)``.

        The caller stores ``new_tat`` and sleeps ``delay`` seconds before using the
        bytes (or before reading more). Debt is never forgiven: a caller that was late
        still pays, so the long-run average holds.
        """
        base = max(tat, now)
        new_tat = base + nbytes / self.rate
        delay = new_tat - now - self.burst / self.rate
        return new_tat, max(0.0, delay)
