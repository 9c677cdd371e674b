"""Slow clients for server tests: connections that never finish a request head.

Helpers (import them from ``tests.support.slowclients``):

- ``more_descriptors(n)``: a context manager raising this process's soft RLIMIT_NOFILE
  to at least ``n`` (up to the hard limit; fails the test if the hard limit is lower).
- ``open_idle(port, n)`` -> ``n`` sockets to 127.0.0.1:port that never complete a request
  head (every other one sends a request line and one header, then stalls).
- ``closed_by_peer(sock)`` -> True when the server closed it (EOF or reset).
- ``wait_all_closed(socks, deadline)`` -> the sockets still open when every one was
  closed by the server or the ``time.monotonic()`` deadline passed (polled).
- ``established(pid, port)`` -> how many established TCP connections process ``pid``
  accepted on its listening ``port`` (a connection waiting in the listen backlog belongs
  to no process); ``wait_established(pid, port, n, deadline_s)`` polls until it is ``n``
  and returns the last count.
- ``http_get(conn, path)`` -> the status of one GET on an ``http.client`` connection.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

__all__ = [
    "PARTIAL_HEAD",
    "closed_by_peer",
    "established",
    "http_get",
    "more_descriptors",
    "open_idle",
    "wait_all_closed",
    "wait_established",
]

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: server\r\n"  # no blank line: never complete


@contextlib.contextmanager
def more_descriptors(n: int) -> Iterator[None]:
    """Raise the soft open files limit to at least ``n`` while inside (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {n} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never complete a request head (every other one sends part)."""
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            if i % 2:
                s.sendall(PARTIAL_HEAD)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    """True when the server closed ``s`` (EOF or reset); False if it is open and silent."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


def wait_all_closed(socks: list[socket.socket], deadline: float) -> list[socket.socket]:
    """Poll until the server closed every socket or ``deadline`` passed; returns those open."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    left = set(socks)
    try:
        while left and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if closed_by_peer(s):
                    sel.unregister(s)
                    left.discard(s)
    finally:
        sel.close()
    return list(left)


def established(pid: int, port: int) -> int:
    """Established TCP connections that process ``pid`` accepted on its ``port``."""
    conns = psutil.Process(pid).net_connections("tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def wait_established(pid: int, port: int, n: int, deadline_s: float = 15.0) -> int:
    """Poll until ``pid`` holds ``n`` connections on ``port``; returns the last count."""
    deadline = time.monotonic() + deadline_s
    while (got := established(pid, port)) != n and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def http_get(conn: http.client.HTTPConnection, path: str = "/healthz") -> int:
    """One GET on ``conn`` (kept alive); its status."""
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status
