"""Listening for HTTP with limits: a request-head timeout and a cap on open connections.

Owns the accepting side of the two servers, the hub (``accel serve``) and the node
daemon (``accel node``), so that neither imports the other. A client that opens a
connection and never finishes its request head (a slowloris, a crashed peer, a port
scan) must not hold a descriptor forever, and ten thousand of them must not take the
descriptors that real requests need.

- **Header timeout**: aiohttp arms its keep-alive timer when a connection is made and
  again after each answer, and closes the connection if no complete request head has
  arrived when it fires (bytes of an unfinished head do not re-arm it). That timer is
  exactly a request-head timeout, so ``keepalive_timeout`` is set to it: a connection is
  closed (plainly, no 408) when its first or next request head has not arrived within
  ``header_timeout_s``; an idle keep-alive connection therefore lives that long too.
- **Connection cap**: asyncio's and uvloop's servers accept whatever the kernel
  completes and cannot pause. :class:`LimitedSite` accepts on its own socket from a
  reader callback and counts the connections it hands to aiohttp; at the cap it stops
  reading the listening socket (new clients wait in the kernel's listen backlog, as
  with nginx's ``worker_connections``) and starts again when one closes. Open
  connections are not touched. Out of descriptors (EMFILE), it pauses briefly instead
  of spinning on the ready socket.

Imports aiohttp and the standard library only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from typing import Any

from aiohttp import web

from accel.limits import Limits

__all__ = ["LimitedSite", "Limits", "bind_listening_socket", "raise_open_files_limit"]

log = logging.getLogger("accel.listener")

#: descriptors a server needs besides its connections (store files, SQLite, the
#: sendfile threads' duplicates, logs, the event loop's own)
SPARE_DESCRIPTORS = 512
_BACKLOG = 1024
_EMFILE_PAUSE_S = 0.25


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE as far as ``max_connections`` needs (up to the hard
    limit); returns how many connections the resulting limit leaves room for.

    A default soft limit of 1024 would otherwise make the 1025th connection an EMFILE
    long before ``--max-connections`` is reached.
    """
    needed = max_connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError) as exc:
                log.warning("cannot raise the open files limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    room = max(1, soft - SPARE_DESCRIPTORS)
    if room < max_connections:
        log.warning(
            "open files limit %d leaves room for %d connections, not %d (raise the hard "
            "limit: ulimit -Hn, or LimitNOFILE= in a systemd unit)",
            soft,
            room,
            max_connections,
        )
    return min(room, max_connections)


def bind_listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port`` and listening (port 0: any free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _CountedHandler(web.RequestHandler):
    """aiohttp's request handler that tells its site when its connection is gone."""

    def __init__(self, site: LimitedSite, token: object, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._site = site
        self._token = token

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._site._release(self._token)


class LimitedSite(web.BaseSite):
    """An aiohttp site on a listening socket with :class:`Limits` applied.

    ``handler_options`` go to each connection's ``web.RequestHandler`` (``access_log``
    and the like); ``keepalive_timeout`` is the limits' header timeout. The runner's
    own handler options are not used (this site makes the handlers).
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        limits: Limits = Limits(),  # frozen: one shared default is safe
        **handler_options: Any,
    ) -> None:
        super().__init__(runner, backlog=_BACKLOG)
        self._sock = sock
        self._limits = limits
        self._options = {**handler_options, "keepalive_timeout": limits.header_timeout_s}
        self._open: set[object] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._stopped = False
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        self._name = f"http://{shown}:{port}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._open)

    async def start(self) -> None:
        await super().start()
        self._loop = asyncio.get_running_loop()
        self._resume()

    async def stop(self) -> None:
        self._stopped = True
        self._pause()
        self._sock.close()
        await super().stop()

    def _resume(self) -> None:
        if not self._reading and not self._stopped and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _accept(self) -> None:
        assert self._loop is not None
        while len(self._open) < self._limits.max_connections:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept connections: %s; pausing", exc.strerror)
                    self._pause()
                    self._loop.call_later(_EMFILE_PAUSE_S, self._resume)
                    return
                continue  # ECONNABORTED and the like: that client is gone, take the next
            conn.setblocking(False)
            token = object()
            self._open.add(token)
            task = self._loop.create_task(self._connect(conn, token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._pause()  # at the cap: the kernel's backlog holds the next clients

    async def _connect(self, conn: socket.socket, token: object) -> None:
        assert self._loop is not None
        server = self._runner.server
        if server is None or self._stopped:
            conn.close()
            self._release(token)
            return
        loop = self._loop

        def handler() -> web.RequestHandler:
            return _CountedHandler(self, token, manager=server, loop=loop, **self._options)

        try:
            await loop.connect_accepted_socket(handler, conn)
        except OSError:  # gone before the transport was made: never counted by aiohttp
            conn.close()
            self._release(token)

    def _release(self, token: object) -> None:
        if token in self._open:
            self._open.discard(token)
            if len(self._open) < self._limits.max_connections:
                self._resume()
