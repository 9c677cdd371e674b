"""Asking each peer which blocks it holds (``GET {file URL}?have``), while a file downloads.

A peer fills up as it downloads too, so its bitmap is asked again every
``have_interval`` seconds (and at once after it answered ``404 block_not_held``). The
answer goes into the selection policy (:meth:`SourcePolicy.holding`); what the policy
does with it is :mod:`~accel.fetch.sources_order`'s.

- a JSON answer is parsed by :func:`~accel.fetch.sources_have.parse_have` (held to the
  expected size and block size: a peer with another file holds nothing of ours);
- a server that does not know ``?have`` and answers with the file itself (an
  ``accel serve`` hub, nginx) holds the whole file: only its head is read;
- no answer, or an error status, means it holds nothing for now (no request goes
  there; a node never waits on it, the hub takes its blocks).

The requests use the standard library's ``http.client`` in a thread (a few small
answers per second at most); the peer's headers (the fleet token) go to the peer's
origin only: ``?have`` never follows a redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from accel.fetch.sources_have import MAX_HAVE_BYTES, Have, HaveError, parse_have
from accel.fetch.sources_links import Link
from accel.fetch.sources_votes import SourceVoters

__all__ = ["HAVE_INTERVAL_S", "PeerHaves", "ask_have", "have_url"]

#: seconds between two ``?have`` questions to one peer while the file downloads
HAVE_INTERVAL_S = 0.5
#: how long one ``?have`` may take
_HAVE_TIMEOUT_S = 5.0
#: the longest wait between two asks for more peers
_FIND_MAX_S = 30.0
#: asks for peers that found none after which a node stops expecting any (the first
#: at the start, then after 2 and 4 s: about 6 s)
_EXPECT_FINDS = 3

log = logging.getLogger("accel.fetch")


class HaveUnavailable(Exception):
    """The peer gave no usable ``?have`` answer (unreachable, an error status)."""


def have_url(url: str) -> str:
    """``url`` with the ``have`` query (kept after any query it has)."""
    return f"{url}&have" if "?" in url else f"{url}?have"


def ask_have(
    url: str,
    headers: Sequence[tuple[str, str]],
    *,
    size: int,
    block_size: int,
    timeout: float = _HAVE_TIMEOUT_S,
) -> Have | None:
    """What the file at ``url`` holds: a :class:`Have` (a peer's bitmap), None (a
    server that answered with the file: all of it), or :class:`HaveUnavailable`."""
    parts = urlsplit(have_url(url))
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    if parts.hostname is None:
        raise HaveUnavailable(f"{url}: no host")
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request(
            "GET",
            target,
            headers={"Accept": "application/json", "Accept-Encoding": "identity", **dict(headers)},
        )
        resp = conn.getresponse()
        kind = resp.getheader("content-type", "")
        if resp.status == 200 and "json" in kind:
            body = resp.read(MAX_HAVE_BYTES + 1)
            try:
                return parse_have(body, size=size, block_size=block_size)
            except HaveError as exc:
                raise HaveUnavailable(f"{url}: {exc}") from exc
        if resp.status in (200, 206):
            length = resp.getheader("content-length")
            if resp.status == 200 and length is not None and length.strip() != str(size):
                raise HaveUnavailable(f"{url}: the file there is {length} bytes, not {size}")
            return None  # the file itself: a whole source (only its head was read)
        raise HaveUnavailable(f"{url}: HTTP {resp.status} to ?have")
    except (OSError, http.client.HTTPException) as exc:
        raise HaveUnavailable(f"{url}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            conn.close()


class PeerHaves(SourceVoters):
    """The ``?have`` loop of a download with peers (a part of FileDownload)."""

    #: headers for peers only (the fleet token): never the caller's own credentials
    peer_headers: tuple[tuple[str, str], ...]
    have_interval: float
    #: set to ask every peer again now (after a ``block_not_held``)
    have_wake: asyncio.Event | None = None
    #: the caller's way to learn of more peers as the download runs (URLs of this file)
    find_peers: Callable[[], Awaitable[Sequence[str]]] | None
    _next_find: float = 0.0
    _finds: int = 0

    async def _find_peers(self) -> None:
        """Add the peers :attr:`find_peers` names that are not sources yet; asked again
        after 2, 4, 8... seconds (at most every 30), since a fleet starting at once
        finds each other only as each starts."""
        if self.find_peers is None:
            return
        self._finds += 1
        self._next_find = time.monotonic() + min(_FIND_MAX_S, 2.0**self._finds)
        try:
            urls = await self.find_peers()
        except Exception as exc:  # the caller's lookup (a tracker): never the download's
            log.info("no more peers for %s: %s", self.url, exc)
            urls = []
        if (
            self.policy.expect_peers
            and not any(s.peer and s.heard for s in self.policy.sources)
            and self._finds >= _EXPECT_FINDS
        ):
            # nobody answers: this node is alone, the hub gets all its connections back
            # (a peer that answers later caps it again: sources_order.last_resort_cap)
            self.policy = self.policy.expecting(False)
        known = {s.url for s in self.policy.sources}
        for u in urls:
            if u not in known:
                known.add(u)
                self.policy = self.policy.with_peer(u)
                self.links.append(Link(u))

    def _peer_indexes(self) -> list[int]:
        """The peers worth asking: not given up, and not known to hold the whole file
        (a whole file stays whole; asking again would cost the server a response)."""
        assert self.total is not None
        n = -(-self.total // self.block_size)
        return [
            i
            for i, s in enumerate(self.policy.sources)
            if s.peer
            and not s.quarantined
            and not (s.heard and (s.have is None or s.have.covers(0, n)))
        ]

    async def _ask_haves(self) -> None:
        """Ask every peer once, at the same time; their answers go into the policy.

        Each question runs in a thread (``http.client``), awaited with
        :func:`asyncio.wait`, which a cancel interrupts at once: the threads' answers
        are then dropped (each ends within its timeout), never waited for."""
        assert self.total is not None
        loop = asyncio.get_running_loop()
        asked = {
            loop.run_in_executor(
                None,
                functools.partial(
                    ask_have,
                    self.links[i].url,
                    self.peer_headers,
                    size=self.total,
                    block_size=self.block_size,
                ),
            ): i
            for i in self._peer_indexes()
        }
        if not asked:
            return
        await asyncio.wait(asked)
        for fut, i in asked.items():
            err = fut.exception()
            if isinstance(err, HaveUnavailable):
                if self.policy[i].heard:
                    log.info("peer %s: %s", self.policy[i].url.split("?", 1)[0], err)
                self.policy = self.policy.unheard(i)
            elif err is not None:
                raise err
            else:
                self.policy = self.policy.holding(i, fut.result())

    async def _poll_haves(self) -> None:
        """Ask again every :attr:`have_interval` seconds (or when woken) until cancelled."""
        self.have_wake = wake = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.have_interval)
            wake.clear()
            t0 = time.monotonic()
            if self.find_peers is not None and t0 >= self._next_find:
                await self._find_peers()
            await self._ask_haves()
            # a burst of block_not_held answers costs one round, not one per answer
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
