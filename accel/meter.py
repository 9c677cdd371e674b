"""The one progress model: bytes received that never go backwards, speed over a window.

Pure values over (time, bytes) samples, no I/O and no clock of its own (callers pass
``now``), so the CLI's bars, its plain lines, ``accel status``, ``--json`` and the node's
dashboard all show figures computed the same way:

- ``bytes_done`` is every byte received, including chunks still in flight; a retried
  chunk drops its in-flight bytes, but what is *shown* holds at its highest value until
  the refetch passes it (:class:`Received`);
- ``speed_bps`` is the bytes received over the last :data:`WINDOW_S` seconds divided by
  that time (:class:`RateMeter`): a stall decays the speed towards zero instead of
  freezing the last figure, and a short run still has a speed at its end;
- ``eta_s`` is what is left divided by that speed (:func:`eta`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["WINDOW_S", "RateMeter", "Received", "eta"]

#: the sliding window of the speed figure: long enough to smooth 16 MiB chunk steps and
#: the rate limiter's bursts, short enough that a change of speed shows within seconds
WINDOW_S = 3.0


def eta(remaining: float, speed_bps: float) -> float | None:
    """Seconds left at ``speed_bps`` (``None`` while nothing moves)."""
    if speed_bps <= 0:
        return None
    return round(max(0.0, remaining) / speed_bps, 2)


@dataclass
class Received:
    """A count of received bytes as shown: clamped to ``[0, total]``, never decreasing."""

    total: int | None = None
    shown: int = 0

    def see(self, received: int) -> int:
        """Take the latest count (committed + in flight); return what to show."""
        if self.total is not None:
            received = min(received, self.total)
        self.shown = max(self.shown, received)
        return self.shown


@dataclass
class RateMeter:
    """Speed over the last ``window_s`` seconds of a never-decreasing byte count."""

    window_s: float = WINDOW_S
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, done: int) -> None:
        """Record that ``done`` bytes were received by ``now`` (monotonic seconds)."""
        s = self._samples
        if s and done < s[-1][1]:
            done = s[-1][1]  # a caller's count may dip (a retry): speed is never negative
        if s and now <= s[-1][0]:
            s[-1] = (s[-1][0], done)
        else:
            s.append((now, done))
        # keep one sample older than the window as its left edge
        while len(s) > 2 and s[1][0] <= now - self.window_s:
            s.popleft()

    def speed(self, now: float) -> float:
        """Bytes per second over the window ending ``now``; 0 before two samples."""
        s = self._samples
        if len(s) < 2:
            return 0.0
        left = now - self.window_s
        t0, b0 = s[0]
        if t0 < left:
            # the window's left edge: interpolated between the samples either side of it
            for t1, b1 in s:
                if t1 > left:
                    b0 = int(b0 + (b1 - b0) * (left - t0) / (t1 - t0))
                    t0 = left
                    break
                t0, b0 = t1, b1
        span = now - t0
        return (s[-1][1] - b0) / span if span > 0 else 0.0
