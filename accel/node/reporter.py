"""Reliable, non-blocking delivery of reports to the scheduler.

Owns :class:`Backoff` (a pure retry-delay policy) and :class:`SchedulerReporter`: a
bounded in-memory queue drained by one background task that delivers through a
:class:`~accel.node.transport.SchedulerTransport`, retrying a failed delivery with
backoff until it succeeds. :meth:`SchedulerReporter.report` never waits on the network:
a job guard must answer a job at once even when the scheduler is down. When the queue is
full the oldest report is dropped (and counted): a fresh report about a job is worth more
than a stale one. Reports are delivered in order; a report is never delivered twice by
this reporter unless the transport could not confirm the first attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from accel.errors import DeliveryError
from accel.node.transport import SchedulerTransport
from accel.schema import ModelNotAvailableMessage

__all__ = ["Backoff", "ReporterStats", "SchedulerReporter"]

log = logging.getLogger("accel.node.reporter")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap and proportional jitter.

    ``delay(attempt)`` for attempt 1, 2, 3... is ``initial_s * factor**(attempt-1)``
    capped at ``max_s``, then spread by ``±jitter`` (a fraction) so that many nodes that
    lost the same scheduler do not all come back in the same millisecond.
    """

    initial_s: float = 0.2
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s:
            raise ValueError(f"invalid backoff {self!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (>= 1), without jitter."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        # Cap the exponent first so huge attempt numbers cannot overflow a float.
        exp = min(attempt - 1, 64)
        return float(min(self.max_s, self.initial_s * self.factor**exp))

    def delay(self, attempt: int, rand: float) -> float:
        """``base_delay`` spread by jitter; ``rand`` is a uniform draw in [0, 1)."""
        spread = (2.0 * rand - 1.0) * self.jitter
        return self.base_delay(attempt) * (1.0 + spread)


@dataclass
class ReporterStats:
    """Counters a dashboard or a test can read."""

    delivered: int = 0
    dropped: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    delivered_ids: deque[str] = field(default_factory=lambda: deque(maxlen=100))


class SchedulerReporter:
    """Queue reports and deliver them in the background, retrying with backoff.

    Use as an async context manager (or call :meth:`start` and :meth:`aclose`). The
    reporter owns the transport and closes it.
    """

    def __init__(
        self,
        transport: SchedulerTransport,
        *,
        max_pending: int = 1000,
        backoff: Backoff | None = None,
        rand: Callable[[], float] = random.random,
        on_delivered: Callable[[ModelNotAvailableMessage], object] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.transport = transport
        self.backoff = backoff or Backoff()
        self.stats = ReporterStats()
        self._rand = rand
        self._pending: deque[ModelNotAvailableMessage] = deque(maxlen=max_pending)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_delivered = on_delivered
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Reports waiting for delivery (including one being retried)."""
        return len(self._pending)

    def report(self, message: ModelNotAvailableMessage) -> None:
        """Queue ``message`` for delivery and return at once (never blocks, never raises)."""
        if len(self._pending) == self._pending.maxlen:
            dropped = self._pending[0]
            self.stats.dropped += 1
            log.warning(
                "scheduler report queue full: dropping the oldest report (job %s)",
                dropped.job_id,
            )
        self._pending.append(message)
        self._idle.clear()
        self._wakeup.set()

    def start(self) -> None:
        """Start the background delivery task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="accel-scheduler-reporter")

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            message = self._pending[0]
            try:
                await self.transport.send(message)
            except DeliveryError as exc:
                attempt += 1
                self.stats.failed_attempts += 1
                self.stats.last_error = exc.message
                delay = self.backoff.delay(attempt, self._rand())
                log.info(
                    "report for job %s not delivered (%s); retry %d in %.2fs",
                    message.job_id,
                    exc.message,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            # The queue may have dropped this very message while we were sending.
            if self._pending and self._pending[0] is message:
                self._pending.popleft()
            self.stats.delivered += 1
            self.stats.last_error = None
            self.stats.delivered_ids.append(message.message_id)
            if self._on_delivered is not None:
                self._on_delivered(message)

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued report to be delivered."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, *, drain_timeout_s: float = 2.0) -> None:
        """Try to deliver what is queued for a short while, then stop and close."""
        if self._task is not None:
            if self._pending:
                await self.drain(drain_timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            log.warning("%d scheduler report(s) not delivered at shutdown", len(self._pending))
        await self.transport.aclose()

    async def __aenter__(self) -> SchedulerReporter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
