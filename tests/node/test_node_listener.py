"""Slow clients against the real ``accel node``: the same listener limits as the hub.

Faults injected: 1,000 connections that never finish a request head against a node
started with ``--header-timeout 2``, and idle connections holding every slot of a node
started with ``--max-connections 3``.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.node.stack import publish, running_hub, running_node
from tests.support.slowclients import (
    closed_by_peer,
    http_get,
    more_descriptors,
    open_idle,
    wait_all_closed,
    wait_established,
)

IDLE = 1000
HEADER_TIMEOUT = 2.0
CAP = 3


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_node_closes_late_heads_and_serves_beside_them(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, "m", "1.0", {"f.bin": 1000})
    models = tmp_path / "models"
    args = ("--header-timeout", str(HEADER_TIMEOUT))
    with (
        more_descriptors(IDLE + 500),
        running_hub(store) as hub,
        running_node(models, hub.url, *args) as node,
    ):
        port = _port(node.url)
        socks = open_idle(port, IDLE)
        opened = time.monotonic()
        try:
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            assert http_get(conn, "/api/state") == 200
            conn.close()
            assert time.monotonic() - t0 < 1.0
            assert not any(closed_by_peer(s) for s in socks[-50:])
            left = wait_all_closed(socks, opened + HEADER_TIMEOUT + 10.0)
            assert not left, f"{len(left)} of {IDLE} idle sockets still open"
        finally:
            for s in socks:
                s.close()


def test_node_caps_its_connections(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, "m", "1.0", {"f.bin": 1000})
    models = tmp_path / "models"
    with (
        running_hub(store) as hub,
        running_node(models, hub.url, "--max-connections", str(CAP)) as node,
    ):
        port = _port(node.url)
        pid = node.proc.pid
        assert wait_established(pid, port, 0) == 0
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert http_get(keep) == 200
        idle = open_idle(port, CAP - 1)
        sel = selectors.DefaultSelector()
        try:
            assert wait_established(pid, port, CAP) == CAP
            extra = socket.create_connection(("127.0.0.1", port), timeout=10)
            idle.append(extra)
            head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            extra.sendall(head.encode())  # the node answers 403 to a foreign Host
            sel.register(extra, selectors.EVENT_READ)
            assert sel.select(1.0) == [], "a connection past the cap was served"
            assert http_get(keep) == 200  # a held connection keeps working
            idle.pop(0).close()
            assert sel.select(15.0), "the waiting client was not served after a slot freed"
            assert extra.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            sel.close()
            keep.close()
            for s in idle:
                s.close()
