"""For the inference service: follow a node daemon's ``/events`` stream.

Owns a small server-sent-events parser (:class:`SSEParser`, pure) and
:func:`follow_events`, an async iterator that reconnects after a dropped connection and
sends ``Last-Event-ID`` so the daemon replays what was missed (the daemon keeps a short
history). Typical use is to reload a model on ``ready`` and drop it on ``removed``::

    async for ev in follow_events("http://127.0.0.1:8700", names={"ready", "removed"}):
        if ev.name == "ready":
            service.reload(ev.data["model_id"], ev.data["path"])

Never talks to the hub or the models dir.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["NodeEvent", "SSEParser", "follow_events"]

log = logging.getLogger("accel.node.client")


@dataclass(frozen=True)
class NodeEvent:
    """One event of the stream: its name, id (if any) and decoded JSON data."""

    name: str
    data: Any
    id: str | None = None


class SSEParser:
    """Feed it lines (without the line break); it returns an event at each blank line."""

    def __init__(self) -> None:
        self._name = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> NodeEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keepalive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> NodeEvent | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data:
            self._name = ""
            return None
        text = "\n".join(self._data)
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        event = NodeEvent(self._name or "message", data, self._id)
        self._name, self._data, self._id = "", [], None
        return event


async def follow_events(
    node_url: str,
    *,
    names: Collection[str] | None = None,
    reconnect: bool = True,
    retry_s: float = 1.0,
    session: aiohttp.ClientSession | None = None,
) -> AsyncGenerator[NodeEvent, None]:
    """Yield the node's events (only ``names`` if given), reconnecting when dropped."""
    own = session is None
    sess = session or aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
    )
    parser = SSEParser()
    try:
        while True:
            headers = {"Accept": "text/event-stream"}
            if parser.last_id is not None:
                headers["Last-Event-ID"] = parser.last_id
            try:
                async with sess.get(node_url.rstrip("/") + "/events", headers=headers) as resp:
                    resp.raise_for_status()
                    async for raw in resp.content:
                        event = parser.feed(raw.decode("utf-8").rstrip("\r\n"))
                        if event is None:
                            continue
                        if names is None or event.name in names:
                            yield event
            except (aiohttp.ClientError, OSError) as exc:
                if not reconnect:
                    raise
                log.info("event stream dropped (%s); reconnecting", exc)
            else:
                if not reconnect:
                    return
            await asyncio.sleep(retry_s if parser.retry_ms is None else parser.retry_ms / 1000)
    finally:
        if own:
            await sess.close()
