"""The node's announces to the hub's tracker: what this peer holds, as a heartbeat.

Owns ``POST {hub}/api/peers/announce`` (a :class:`~accel.schema.PeerAnnounce`: node id,
the peer server's URL, zone, each version held with its completeness 0..1) with
``Authorization: Bearer <fleet token>``: at start, soon after anything changed (an
install's progress, finish, failure or removal: :meth:`Announcer.poke`, at most one
announce per ``min_gap_s``), and as a heartbeat every ``interval`` the tracker answers
(a third of its TTL), so the node stays listed while it runs. On a clean stop it
announces that it holds nothing (:meth:`Announcer.leave`), so askers stop being sent
to it before its TTL runs out. A failed announce is logged once per kind of failure
and retried at the next beat; it never stops the node. Never serves, never installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from accel.schema import AnnounceAnswer, PeerAnnounce, PeerHolding

__all__ = ["AnnounceStats", "Announcer"]

log = logging.getLogger("accel.node.peers")

#: the most versions one announce lists (the tracker's limit)
MAX_VERSIONS = 1000
_DEFAULT_INTERVAL_S = 10.0


@dataclass
class AnnounceStats:
    """What the announce loop did (shown in the node's ``/api/state``)."""

    sent: int = 0
    failed: int = 0
    last_ok_at: float | None = None  #: wall clock
    last_error: str | None = None
    interval_s: float = _DEFAULT_INTERVAL_S
    versions: list[dict[str, Any]] = field(default_factory=list)


class Announcer:
    """The announce loop of one node (:meth:`run` is its task)."""

    def __init__(
        self,
        hub_url: str,
        *,
        node_id: str,
        url: str,
        zone: str,
        token: str | None,
        holdings: Callable[[], list[tuple[str, str, float]]],
        min_gap_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = hub_url.rstrip("/") + "/api/peers/announce"
        self.node_id = node_id
        self.url = url
        self.zone = zone
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._holdings = holdings
        self.min_gap_s = min_gap_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.stats = AnnounceStats()

    def poke(self) -> None:
        """Something this node holds changed: announce soon (coalesced)."""
        self._wake.set()

    def body(self, holds: list[tuple[str, str, float]]) -> PeerAnnounce:
        """The announce of ``holds`` (``(model_id, version, complete)``)."""
        versions = [PeerHolding(model_id=m, version=v, complete=float(c)) for m, v, c in holds][
            :MAX_VERSIONS
        ]
        return PeerAnnounce(node_id=self.node_id, url=self.url, zone=self.zone, versions=versions)

    async def announce_once(self) -> bool:
        """Announce what this node holds now; True when the tracker took it."""
        holds = await asyncio.to_thread(self._holdings)
        return await self._post(self.body(holds))

    async def _post(self, body: PeerAnnounce) -> bool:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self.endpoint,
                data=body.model_dump_json(),
                headers={**self._headers, "Content-Type": "application/json"},
            ) as r:
                text = await r.text()
                if r.status != 200:
                    return self._failed(f"the tracker answered HTTP {r.status}: {text[:200]}")
                answer = AnnounceAnswer.model_validate_json(text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self._failed(f"the hub is unreachable at {self.endpoint} ({type(exc).__name__})")
        except ValidationError:
            return self._failed("the tracker's answer is not an AnnounceAnswer")
        if self.stats.last_error is not None:
            log.info("announcing to %s again", self.endpoint)
        self.stats.sent += 1
        self.stats.last_ok_at = time.time()
        self.stats.last_error = None
        self.stats.interval_s = max(0.25, answer.interval)  # a bad answer must not make a busy loop
        self.stats.versions = [h.model_dump() for h in body.versions]
        return True

    def _failed(self, why: str) -> bool:
        self.stats.failed += 1
        if why != self.stats.last_error:  # once per kind of failure, not every beat
            log.warning("cannot announce to the tracker: %s", why)
        self.stats.last_error = why
        return False

    async def run(self) -> None:
        """Announce now, then on every poke (spaced) and every interval, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            started = loop.time()
            try:
                await self.announce_once()
            except Exception:  # a bug in reading the models dir must not end the beat
                log.exception("cannot announce to the tracker")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stats.interval_s):
                    await self._wake.wait()
            gap = self.min_gap_s - (loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)

    async def leave(self, timeout_s: float = 2.0) -> None:
        """Say this node holds nothing now (best effort, bounded), then close."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self._post(self.body([]))
        if self._session is not None:
            await self._session.close()
            self._session = None
