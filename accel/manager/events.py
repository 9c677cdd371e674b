"""What a ModelManager tells the world: event models and the fan-out to subscribers.

Owns the event shapes (pydantic, so the node daemon serialises them to SSE/JSON as they
are) and :class:`EventBus`, which hands every event to callbacks and to async-iterator
subscribers. Publishing never blocks and never raises into the install: a slow iterator
drops its oldest progress events (the next one supersedes them), never ``ready``/``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal

from pydantic import BaseModel, Field

from accel.schema import FileError

__all__ = [
    "Event",
    "EventBus",
    "FailedEvent",
    "FileProgress",
    "ProgressEvent",
    "ReadyEvent",
    "RemovedEvent",
    "ResumeEvent",
    "StateEvent",
    "Subscription",
    "TotalProgress",
    "WarningEvent",
]

log = logging.getLogger("accel.manager")


class FileProgress(BaseModel):
    """One file's progress inside a model version."""

    path: str
    state: str
    bytes_done: int
    bytes_total: int
    inflight: int = 0
    speed_bps: float = 0.0
    eta_s: float | None = None


class TotalProgress(BaseModel):
    """All installs of this manager together (the CLI's and the dashboard's total line)."""

    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    active: int


class ProgressEvent(BaseModel):
    """Bytes, speed and ETA for the model version, in total, and per file for the files
    that changed since the previous progress event of this version (all of them in the
    first): a consumer keeps the last figures of each file by ``path``."""

    type: Literal["progress"] = "progress"
    model_id: str
    version: str
    state: str
    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    files: list[FileProgress] = Field(default_factory=list)
    total: TotalProgress | None = None
    #: a staged update of a ready version: the version stays usable meanwhile
    update: bool = False


class StateEvent(BaseModel):
    """A version changed state (queued, downloading, verifying, paused...)."""

    type: Literal["state"] = "state"
    model_id: str
    version: str
    state: str
    #: the state of a staged update; the version itself stays ``ready`` and usable
    update: bool = False


class ResumeEvent(BaseModel):
    """An install starts with bytes already held: what it keeps and what is left to fetch.

    ``bytes_kept``: files finished by an earlier run plus the finished chunks of partial
    files (their checkpoints); ``bytes_reused``: files linked or copied from installed
    versions with the same content; ``bytes_to_fetch``: the rest.
    """

    type: Literal["resuming"] = "resuming"
    model_id: str
    version: str
    bytes_total: int
    bytes_kept: int
    bytes_reused: int = 0
    bytes_to_fetch: int
    update: bool = False


class ReadyEvent(BaseModel):
    """A version is installed, verified and usable at ``path``."""

    type: Literal["ready"] = "ready"
    model_id: str
    version: str
    path: str
    bytes_total: int = 0
    bytes_fetched: int = 0
    bytes_reused: int = 0
    #: held from an earlier run (finished files and chunks) and not fetched again
    bytes_kept: int = 0
    elapsed_s: float = 0.0
    #: new content swapped in at the same path (reload it)
    update: bool = False


class FailedFile(BaseModel):
    path: str
    error: FileError


class FailedEvent(BaseModel):
    """An install ended in ``error``: the failed files with their causes (kept files stay)."""

    type: Literal["failed"] = "failed"
    model_id: str
    version: str
    error: FileError
    failed_files: list[FailedFile] = Field(default_factory=list)
    #: a staged update failed; the version stays ``ready`` with its old content
    update: bool = False


class RemovedEvent(BaseModel):
    """A version was removed from the models dir."""

    type: Literal["removed"] = "removed"
    model_id: str
    version: str


class WarningEvent(BaseModel):
    """Something worked, but not as asked (e.g. a cached manifest used while offline)."""

    type: Literal["warning"] = "warning"
    message: str
    model_id: str | None = None
    version: str | None = None


Event = (
    ProgressEvent
    | StateEvent
    | ResumeEvent
    | ReadyEvent
    | FailedEvent
    | RemovedEvent
    | WarningEvent
)


class Subscription:
    """An async iterator of events, or a callback registration; ``close()`` ends it."""

    def __init__(
        self, bus: EventBus, callback: Callable[[Event], None] | None, maxsize: int
    ) -> None:
        self._bus = bus
        self.callback = callback
        self.maxsize = maxsize
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False

    def offer(self, event: Event) -> None:
        if self.callback is not None:
            try:
                self.callback(event)
            except Exception:
                log.exception("event callback failed")
            return
        if self._queue.qsize() >= self.maxsize:
            # Progress is superseded by the next progress: drop the oldest one queued, or
            # this one. ready/failed/removed are never dropped (the queue may overflow).
            items = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            victim = next((i for i, it in enumerate(items) if isinstance(it, ProgressEvent)), None)
            if victim is not None:
                del items[victim]
            for item in items:
                self._queue.put_nowait(item)
            if victim is None and isinstance(event, ProgressEvent):
                return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving; an iterating consumer ends after the queued events."""
        if self.closed:
            return
        self.closed = True
        self._bus.discard(self)
        if self.callback is None:
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item


class EventBus:
    """Fan-out of events to every subscription."""

    def __init__(self, *, maxsize: int = 1000) -> None:
        self._subs: list[Subscription] = []
        self.maxsize = maxsize

    def subscribe(self, callback: Callable[[Event], None] | None = None) -> Subscription:
        sub = Subscription(self, callback, self.maxsize)
        self._subs.append(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            sub.offer(event)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
