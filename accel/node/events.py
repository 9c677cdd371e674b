"""Fan-out of manager events to many listeners, and their wire form (SSE).

Owns :class:`EventBroadcaster`: it takes every event the ModelManager publishes, turns it
into a plain JSON-ready dict with an ``event`` name, keeps the latest state per model
version (so a dashboard that connects late starts from a snapshot, not from nothing)
and hands each event to every subscriber's bounded queue. A slow subscriber loses old
``progress`` events, never ``ready``/``failed``/``removed`` and never blocks the others.
:func:`format_sse` is the pure encoder of one server-sent event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

__all__ = ["EventBroadcaster", "Subscriber", "event_name", "format_sse", "to_jsonable"]

#: events that are a state change and must reach every subscriber
_ESSENTIAL = frozenset({"ready", "failed", "removed", "paused", "resumed", "queued"})


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (pydantic models, dataclasses, paths, enums...)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def event_name(data: Mapping[str, Any], obj: Any = None) -> str:
    """The event's name: its ``type``/``kind``/``event`` field, else its class name."""
    for key in ("event", "type", "kind"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    if obj is not None:
        name = type(obj).__name__
        if name.endswith("Event") and len(name) > 5:
            name = name[: -len("Event")]
        return name.lower()
    return "message"


def format_sse(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    """One server-sent event: ``id``, ``event`` and a single-line JSON ``data`` field."""
    if any(c in str(x) for x in (event, event_id) for c in "\r\n"):
        raise ValueError("event name and id must be one line")
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so the payload is always one data line.
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class Subscriber:
    """One listener's queue; iterate it to receive ``(id, name, data)`` tuples."""

    def __init__(self, owner: EventBroadcaster, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue(maxsize)
        self.lost = 0

    def offer(self, item: tuple[int, str, dict[str, Any]]) -> None:
        try:
            self._queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        # Full: drop the oldest progress tick to make room; state changes stay.
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        victim = next((k for k, x in enumerate(items) if x[1] not in _ESSENTIAL), None)
        if victim is not None:
            del items[victim]
            items.append(item)
        elif item[1] in _ESSENTIAL:
            del items[0]
            items.append(item)
        self.lost += 1
        for x in items:
            self._queue.put_nowait(x)

    async def get(self) -> tuple[int, str, dict[str, Any]]:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._owner._subscribers.discard(self)


class EventBroadcaster:
    """Receives events (any object), numbers them and fans them out to subscribers."""

    def __init__(self, *, queue_size: int = 1000, history: int = 1000) -> None:
        self._subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self.latest: dict[str, dict[str, Any]] = {}
        # Ids are "<boot>-<n>": a client's Last-Event-ID from before a restart never
        # matches, so it gets a fresh snapshot instead of a wrong replay.
        self.boot = secrets.token_hex(4)
        self._history: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=history)

    def wire_id(self, event_id: int) -> str:
        """The SSE id of event number ``event_id``."""
        return f"{self.boot}-{event_id}"

    def since(self, last_event_id: str | None) -> list[tuple[int, str, dict[str, Any]]] | None:
        """Events after ``last_event_id`` if the history still holds them all, else None."""
        if not last_event_id:
            return None
        boot, _, num = last_event_id.partition("-")
        if boot != self.boot or not num.isdigit():
            return None
        last = int(num)
        if self._history and self._history[0][0] > last + 1:
            return None  # some were already forgotten
        return [item for item in self._history if item[0] > last]

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Any, name: str | None = None) -> dict[str, Any]:
        """Publish one event; returns its JSON form (with ``event`` and ``id`` set)."""
        data = to_jsonable(event)
        if not isinstance(data, dict):
            data = {"value": data}
        data = dict(data)
        name = name or event_name(data, event)
        event_id = next(self._ids)
        data["event"] = name
        data["id"] = event_id
        key = _key(data)
        if key is not None:
            if name == "removed":
                self.latest.pop(key, None)
            else:
                self.latest[key] = data
        self._history.append((event_id, name, data))
        for sub in list(self._subscribers):
            sub.offer((event_id, name, data))
        return data


def _key(data: Mapping[str, Any]) -> str | None:
    model_id = data.get("model_id")
    if not isinstance(model_id, str):
        return None
    return f"{model_id}@{data.get('version')}"
