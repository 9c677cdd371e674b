"""Zero-copy sending of a file range over a connection that the client may close at any time.

Owns every touch of the client's socket made by the storage route. A client hangs up
mid-body all the time (``aria2c -x16`` drops the connections whose segment another one
finished; a person presses Ctrl-C), and then the transport is closed under us: uvloop's
socket object answers ``fileno() == -1`` and raises ``ValueError`` (not ``OSError``) on
``setsockopt``, and a descriptor number kept from before may already belong to another
client. So nothing here keeps a descriptor number across an ``await``, and every socket
operation goes through :class:`Wire`, which asks the transport first and turns "closed"
into a quiet False/None instead of an exception in the handler (an exception there is an
"Error handling request" traceback in the hub's log for an ordinary event).

Bytes go out with ``sendfile(2)``: the first call in the event loop with the socket
corked (headers and first bytes leave together; a chunk-sized range usually needs no
more), the rest from a worker thread on duplicated descriptors (uvloop has no
``loop.sendfile``), so no Python touches the payload.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

__all__ = ["Wire", "send_range"]

_STALL_S = 60.0
_INLINE_MAX = 1024 * 1024
_HEADERS_WAIT_S = 1.0
#: the most one paced step sends (an upload limit grants the bytes of each step first)
PACE_STEP = 256 * 1024


class Wire:
    """The client's socket as seen through its transport, safe to use after a hang-up.

    Every method first checks that the transport is still open; any error from the
    socket (``OSError``, or uvloop's ``ValueError`` for a closed descriptor) means the
    client is gone, and is answered as such (False, None), never raised.
    """

    def __init__(self, request: web.Request) -> None:
        self._transport = request.transport

    @property
    def open(self) -> bool:
        """True while the connection can still carry bytes."""
        t = self._transport
        return t is not None and not t.is_closing()

    def _socket(self) -> socket.socket | None:
        if not self.open:
            return None
        assert self._transport is not None
        sock: socket.socket | None = self._transport.get_extra_info("socket")
        return sock

    def fileno(self) -> int | None:
        """The socket's descriptor now (never keep it across an ``await``), or None."""
        sock = self._socket()
        if sock is None:
            return None
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return None
        return fd if fd >= 0 else None

    def cork(self, on: bool) -> None:
        """Set TCP_CORK (headers wait for the first body bytes); a no-op once closed."""
        sock = self._socket()
        if sock is None or not hasattr(socket, "TCP_CORK"):
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
        except (OSError, ValueError):
            pass  # closed between the check and the call: the client is gone

    def dup(self) -> int | None:
        """A duplicate of the socket's descriptor that a thread may own, or None."""
        fd = self.fileno()
        if fd is None:
            return None
        try:
            return os.dup(fd)
        except OSError:
            return None

    def pending(self) -> int:
        """Bytes aiohttp still holds in its write buffer (0 once closed)."""
        if not self.open:
            return 0
        assert self._transport is not None
        try:
            return int(self._transport.get_write_buffer_size())
        except (AttributeError, RuntimeError):
            return 0

    def drop(self, resp: web.StreamResponse) -> None:
        """Close the connection: the answer cannot be completed (client gone or stalled)."""
        resp.force_close()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _send_blocking(
    sock_fd: int, file_fd: int, offset: int, count: int, stop: threading.Event
) -> int:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` with sendfile(2); returns bytes sent.

    Owns both descriptors (duplicates made for this call) and closes them, so a caller
    that is cancelled meanwhile can never close a descriptor this thread still uses.
    """
    try:
        return _send_loop(sock_fd, file_fd, offset, count, stop)
    finally:
        os.close(sock_fd)
        os.close(file_fd)


def _send_loop(sock_fd: int, file_fd: int, offset: int, count: int, stop: threading.Event) -> int:
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    sent = 0
    idle = 0.0
    while sent < count:
        if stop.is_set():
            raise ConnectionResetError("send cancelled")
        try:
            n = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
        except BlockingIOError:
            if poller.poll(500):
                idle = 0.0
            else:
                idle += 0.5
                if idle >= _STALL_S:
                    raise TimeoutError("client stopped reading") from None
            continue
        except InterruptedError:
            continue
        if n == 0:
            raise OSError(errno.EIO, "file shrank while being sent")
        sent += n
    return sent


async def send_range(
    request: web.Request,
    resp: web.StreamResponse,
    pool: ThreadPoolExecutor,
    fd: int,
    offset: int,
    length: int,
    *,
    pace: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Prepare ``resp`` and send ``length`` bytes of ``fd`` from ``offset`` as its body.

    A client that leaves at any point ends the answer quietly (the connection is
    dropped, nothing is raised); ``fd`` stays the caller's to close. With ``pace``, the
    body goes in steps of at most :data:`PACE_STEP` bytes, each sent once
    ``await pace(n)`` returned (an upload limit's token bucket).
    """
    wire = Wire(request)
    # Corked, the headers wait in the socket for the first body bytes and leave with
    # them in one segment (what nginx's tcp_nopush does): on loopback each separate
    # write costs a full trip through the TCP stack.
    wire.cork(True)
    try:
        await resp.prepare(request)
        if pace is None:
            done = await _send(wire, resp, pool, fd, offset, length)
        else:
            done = await _send_paced(wire, resp, pool, fd, offset, length, pace)
        if done:
            await resp.write_eof()
    except ConnectionResetError:  # aiohttp's "cannot write to closing transport"
        wire.drop(resp)
    finally:
        wire.cork(False)


async def _send_paced(
    wire: Wire,
    resp: web.StreamResponse,
    pool: ThreadPoolExecutor,
    fd: int,
    offset: int,
    length: int,
    pace: Callable[[int], Awaitable[None]],
) -> bool:
    """The body in steps, each after ``pace`` granted its bytes; True when all left."""
    sent = 0
    while sent < length:
        step = min(PACE_STEP, length - sent)
        await pace(step)
        if not await _send(wire, resp, pool, fd, offset + sent, step):
            return False
        sent += step
    return True


async def _send(
    wire: Wire,
    resp: web.StreamResponse,
    pool: ThreadPoolExecutor,
    fd: int,
    offset: int,
    length: int,
) -> bool:
    """The body bytes; True when all of them left (the answer may then be finished)."""
    # The headers must be on the wire before our bytes: wait for aiohttp's buffer.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _HEADERS_WAIT_S
    while wire.pending() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    sock_fd = wire.fileno()
    if sock_fd is None or wire.pending():
        wire.drop(resp)
        return False
    # Small answers (and the start of big ones) go out right here: one non-blocking
    # sendfile(2) from the page cache, no thread hop. Whatever the socket buffer did
    # not take is finished by a worker thread.
    try:
        sent = os.sendfile(sock_fd, fd, offset, min(length, _INLINE_MAX))
    except BlockingIOError:
        sent = 0
    except OSError:
        wire.drop(resp)
        return False
    wire.cork(False)  # headers and first bytes go now; the rest streams uncorked
    if sent == length:
        return True
    # Duplicated before any await: the thread owns these two, whatever happens here.
    thread_sock = wire.dup()
    if thread_sock is None:
        wire.drop(resp)
        return False
    try:
        thread_file = os.dup(fd)
    except OSError:
        os.close(thread_sock)
        wire.drop(resp)
        return False
    stop = threading.Event()
    try:
        await loop.run_in_executor(
            pool, _send_blocking, thread_sock, thread_file, offset + sent, length - sent, stop
        )
    except (OSError, TimeoutError):
        wire.drop(resp)  # client gone or stalled: the answer cannot be completed
        return False
    finally:
        stop.set()
    return wire.open
