"""Publish notices over PostgreSQL ``LISTEN/NOTIFY``: every hub hears of a publish at once.

Owns the channel (:data:`CHANNEL`), the sender (:func:`notify_published`, called by
``accel publish --notify-db URL`` after the manifest, the commit point, is written) and
the listener (:class:`CatalogFeed`, one dedicated connection per hub, reconnecting
with backoff). A notice only says "look now": the hub then re-reads its store, so a
lost or duplicated notice costs nothing but latency, and the store's own polling stays
the fallback (a publish that sent no notice, a hub that was disconnected). After every
reconnect the feed calls back once, since a notice may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from accel.errors import UsageDbError
from accel.hub.usage_pg import connect_kwargs, redact_url

__all__ = ["CHANNEL", "CatalogFeed", "notify_published"]

log = logging.getLogger("accel.hub")

CHANNEL = "accel_catalog"


def notify_published(url: str, store: str, model_id: str, version: str) -> None:
    """Tell every hub listening on ``url`` that ``model_id@version`` is in ``store``."""
    import psycopg

    payload = json.dumps({"store": store, "model_id": model_id, "version": version})
    try:
        with psycopg.connect(url, autocommit=True, **connect_kwargs()) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
    except (psycopg.Error, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageDbError(
            f"published, but could not notify the hubs through {redact_url(url)}: {reason}",
            hint="the hubs still notice the new version at their next poll (seconds)",
            url=redact_url(url),
        ) from exc


class CatalogFeed:
    """Listens on :data:`CHANNEL` and calls ``on_notice(payload or None)`` on the loop."""

    def __init__(self, url: str, on_notice: Callable[[str | None], None]) -> None:
        self.url = url
        self.on_notice = on_notice
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="accel-catalog-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        import psycopg

        delay = 0.2
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **connect_kwargs()
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        self.on_notice(None)  # something may have been published meanwhile
                        log.warning("catalog feed: listening again on %s", redact_url(self.url))
                    first, delay = False, 0.2
                    async for notice in conn.notifies():
                        self.on_notice(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    log.warning("catalog feed %s lost: %s", redact_url(self.url), exc)
                self.connected.clear()
                first = False
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
