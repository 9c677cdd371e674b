"""A lean blocking HTTP/1.1 client for the download workers.

Owns the wire: a pool of keep-alive sockets per origin, one request, the response head
(status line and headers, 1xx skipped), and the body framing (``Content-Length``,
``chunked`` or until the connection closes). A body is read straight into the caller's
buffer with ``recv_into``; on plain sockets ``MSG_WAITALL`` fills the buffer in one
system call, so a 1 GiB file costs a few thousand calls and one copy out of the kernel.

Why not aiohttp here: a worker moves bytes from a socket into a file and nothing else;
aiohttp's bytes objects, stream reader and parser cost about twice the CPU of the copy
itself on a 2-core machine. The supervisor and the hub still use aiohttp.

Timeouts: a plain socket is blocking with ``SO_RCVTIMEO`` (``MSG_WAITALL`` needs a
blocking socket; a read returns what it has when the timeout passes); a TLS socket uses
Python's socket timeout. No bytes for ``timeout`` seconds raise :class:`StallTimeout`.
Another thread may call :meth:`Connection.abort` to wake a blocked read at once.
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

__all__ = [
    "Body",
    "Connection",
    "ConnectionPool",
    "NoResponse",
    "Origin",
    "ProtocolError",
    "Response",
    "StallTimeout",
    "origin_of",
    "request_target",
]

_MAX_HEAD = 64 * 1024
_MAX_IDLE_PER_ORIGIN = 64
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class ProtocolError(Exception):
    """The server broke HTTP/1.1 framing (a malformed head, a broken chunked body)."""


class NoResponse(ConnectionError):
    """The connection closed before a single byte of a response."""


class StallTimeout(TimeoutError):
    """No bytes arrived for the socket's timeout."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=1024)
def origin_of(url: str) -> Origin:
    """The scheme, host and port of ``url``; ValueError for anything but http(s).

    Cached: every task asks it of its URL and the download's (an install of 10,000
    files: 20,000 ``urlsplit`` calls, 2% of its CPU); an :class:`Origin` is immutable.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    port = parts.port or (443 if scheme == "https" else 80)
    return Origin(scheme, parts.hostname, port)


def request_target(url: str) -> str:
    """The path and query to send, percent-encoded where the URL was not."""
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe=_SAFE_PATH)
    return f"{path}?{quote(parts.query, safe=_SAFE_QUERY)}" if parts.query else path


class Connection:
    """One socket to one origin, reused while the server keeps it alive."""

    def __init__(self, origin: Origin, timeout: float) -> None:
        self.origin = origin
        self.timeout = timeout
        raw = socket.create_connection((origin.host, origin.port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.plain = origin.scheme == "http"
        if self.plain:
            raw.settimeout(None)
            self.sock: socket.socket = raw
            self.set_timeout(timeout)
        else:
            ctx = ssl.create_default_context()
            self.sock = ctx.wrap_socket(raw, server_hostname=origin.host)
        self.reused = False
        self._aborted = False

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.plain:
            sec = int(timeout)
            tv = struct.pack("ll", sec, int((timeout - sec) * 1e6))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        else:
            self.sock.settimeout(timeout)

    def recv_into(self, view: memoryview, *, fill: bool) -> int:
        """Read into ``view``; with ``fill`` wait until it is full (plain sockets)."""
        flags = socket.MSG_WAITALL if fill and self.plain else 0
        try:
            return self.sock.recv_into(view, len(view), flags)
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError) as exc:
            return self._stalled(exc)

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes (for response heads and chunk-size lines)."""
        try:
            return self.sock.recv(n)
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError) as exc:
            self._stalled(exc)
            return b""

    def _stalled(self, exc: OSError) -> int:
        """A read timed out: 0 (end) when aborted from another thread, else a stall."""
        if self._aborted:
            return 0
        raise StallTimeout(f"no bytes for {self.timeout:.0f} s") from exc

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BlockingIOError, TimeoutError) as exc:
            raise StallTimeout(f"could not send for {self.timeout:.0f} s") from exc

    def abort(self) -> None:
        """Wake a read blocked in another thread; the connection is not reusable."""
        self._aborted = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ConnectionPool:
    """Idle keep-alive connections per origin, shared by a worker's threads."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()

    def get(self, origin: Origin, timeout: float) -> Connection:
        with self._lock:
            idle = self._idle.get(origin)
            conn = idle.pop() if idle else None
        if conn is not None:
            conn.reused = True
            if conn.timeout != timeout:
                conn.set_timeout(timeout)
            return conn
        return Connection(origin, timeout)

    def put(self, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.origin, [])
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                conn.reused = True
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()


@dataclass
class Response:
    """A response head; ``headers`` keys are lower-case, repeated fields joined."""

    status: int
    reason: str
    version: str
    headers: dict[str, str]
    body: Body = field(repr=False)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)


def read_response(conn: Connection) -> Response:
    """Read a response head (skipping 1xx) and set up its body."""
    pending = b""
    while True:
        buf = bytearray(pending)
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("the response head is larger than 64 KiB")
            chunk = conn.recv(65536)
            if not chunk:
                if not buf:
                    raise NoResponse("the server closed the connection without answering")
                raise ProtocolError("the connection closed inside the response head")
            buf += chunk
        head = bytes(buf[:end]).decode("latin-1")
        pending = bytes(buf[end + 4 :])
        lines = head.split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProtocolError(f"bad status code in {lines[0][:80]!r}") from None
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the real answer follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        version = status_line[0]
        return Response(
            status,
            status_line[2] if len(status_line) > 2 else "",
            version,
            headers,
            Body(conn, pending, headers, version),
        )


class Body:
    """A response body, read into caller buffers; knows when the connection is reusable."""

    def __init__(self, conn: Connection, pending: bytes, headers: dict[str, str], version: str):
        self.conn = conn
        self.pending = pending
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self.left: int | None = None
        if not self.chunked and length is not None:
            if not length.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {length[:40]!r}")
            self.left = int(length)
        self.chunk_left = 0
        self.done = self.left == 0
        connection = headers.get("connection", "").lower()
        self.keep_alive = (
            version == "HTTP/1.1"
            and "close" not in connection
            and (self.chunked or self.left is not None)
        )

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` as far as the body allows; 0 at its end (or early close)."""
        if self.done or not len(view):
            return 0
        if self.chunked:
            return self._chunked_into(view)
        if self.left is not None:
            n = self._raw(view[: min(len(view), self.left)], fill=True)
            self.left -= n
            if n == 0 or self.left == 0:
                self.done = True
            return n
        n = self._raw(view, fill=False)
        if n == 0:
            self.done = True
        return n

    @property
    def complete(self) -> bool:
        """The whole body was read (Content-Length reached or the last chunk seen)."""
        return self.done and (self.chunked or self.left == 0)

    def release(self, pool: ConnectionPool) -> None:
        """Give the connection back when the body was read to its end, else close it."""
        if self.complete and self.keep_alive and not self.pending:
            pool.put(self.conn)
        else:
            self.conn.close()

    def _raw(self, view: memoryview, *, fill: bool) -> int:
        if self.pending:
            n = min(len(view), len(self.pending))
            view[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            if n == len(view) or not fill:
                return n
            return n + self.conn.recv_into(view[n:], fill=True)
        return self.conn.recv_into(view, fill=fill)

    def _readline(self) -> bytes:
        while (i := self.pending.find(b"\r\n")) < 0:
            if len(self.pending) > 4096:
                raise ProtocolError("a chunked-encoding line is too long")
            more = self.conn.recv(4096)
            if not more:
                raise ProtocolError("the connection closed inside a chunked body")
            self.pending += more
        line, self.pending = self.pending[:i], self.pending[i + 2 :]
        return line

    def _chunked_into(self, view: memoryview) -> int:
        if self.chunk_left == 0:
            size_field = self._readline().split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_field[:20]!r}") from None
            if size == 0:
                while self._readline():
                    pass  # trailers
                self.done = True
                return 0
            self.chunk_left = size
        n = self._raw(view[: min(len(view), self.chunk_left)], fill=False)
        if n == 0:
            raise ProtocolError("the connection closed inside a chunk")
        self.chunk_left -= n
        if self.chunk_left == 0 and self._readline():
            raise ProtocolError("a chunk is longer than its size line says")
        return n
