"""Slow clients against the real hub: late request heads are closed, connections are capped.

Faults injected: 2,000 connections that never finish their request head (half send
nothing, half send a request line and one header, then stall), and, with a small
``--max-connections``, idle connections holding every slot. The hub must answer a
normal request beside them at once, close the idle ones after ``--header-timeout``,
keep serving the connections it holds when at the cap, and take a waiting client from
the kernel's backlog as soon as a slot frees. Before this, the hub held such sockets
for aiohttp's keep-alive default (an hour) and accepted without limit.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from accel.listener import SPARE_DESCRIPTORS
from tests.support.hub import RunningHub, publish_model, running_hub
from tests.support.slowclients import (
    closed_by_peer,
    http_get,
    more_descriptors,
    open_idle,
    wait_all_closed,
    wait_established,
)

IDLE = 2000
HEADER_TIMEOUT = 2.0
CAP = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow") / "store"
    publish_model(root, "m", "1.0", {"f.bin": 100_000})
    return root


def test_idle_connections_do_not_delay_a_request_and_are_closed_after_the_timeout(
    store: Path,
) -> None:
    args = ["--header-timeout", str(HEADER_TIMEOUT)]
    with more_descriptors(IDLE + 500), running_hub(store, extra_args=args) as hub:
        socks = open_idle(hub.port, IDLE)
        opened = time.monotonic()
        try:
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
            assert http_get(conn, "/storage/models/m/1.0/f.bin") == 200
            served_s = time.monotonic() - t0
            conn.close()
            assert served_s < 1.0, f"a request beside {IDLE} idle sockets took {served_s:.2f} s"
            # Not before the timeout (the last ones were opened a moment ago)...
            assert not any(closed_by_peer(s) for s in socks[-100:])
            # ...and all of them soon after it (a polled deadline, slack for a busy CI).
            left = wait_all_closed(socks, opened + HEADER_TIMEOUT + 10.0)
            assert not left, f"{len(left)} of {IDLE} idle sockets still open"
            conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
            assert http_get(conn) == 200  # still serving
            conn.close()
            assert "Traceback" not in hub.log()
        finally:
            for s in socks:
                s.close()


def test_a_client_that_finishes_its_head_in_time_is_served(store: Path) -> None:
    """The timeout bounds the head, not the client: a head sent in pieces within it is fine."""
    with (
        running_hub(store, extra_args=["--header-timeout", "3"]) as hub,
        socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s,
    ):
        for piece in (b"GET /heal", b"thz HTTP/1.1\r\n", b"Host: hub\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.2)  # the injected trickle (0.6 s in all), not a wait for a state
        assert s.recv(100).startswith(b"HTTP/1.1 200")


@contextlib.contextmanager
def capped_hub(store: Path) -> Iterator[RunningHub]:
    with running_hub(store, extra_args=["--max-connections", str(CAP)]) as hub:
        # The start-up health checks have hung up; wait until the hub has seen it.
        assert wait_established(hub.proc.pid, hub.port, 0) == 0
        yield hub


def test_past_the_cap_new_clients_wait_and_open_ones_keep_working(store: Path) -> None:
    with capped_hub(store) as hub:
        keep = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
        assert http_get(keep) == 200
        idle = open_idle(hub.port, CAP - 1)
        sel = selectors.DefaultSelector()
        try:
            assert wait_established(hub.proc.pid, hub.port, CAP) == CAP
            # One more client: the kernel completes its handshake (backlog) but the hub
            # does not take it while every slot is held.
            extra = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
            idle.append(extra)
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
            sel.register(extra, selectors.EVENT_READ)
            assert sel.select(1.0) == [], "a connection past the cap was served"
            # A connection the hub holds keeps working at the cap.
            t0 = time.monotonic()
            assert http_get(keep) == 200 and time.monotonic() - t0 < 1.0
            # A slot frees: the waiting client is taken and answered.
            idle.pop(0).close()
            assert sel.select(15.0), "the waiting client was not served after a slot freed"
            assert extra.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            sel.close()
            keep.close()
            for s in idle:
                s.close()


def test_the_hub_raises_its_open_files_limit_for_the_cap(store: Path) -> None:
    """Started with a soft limit of 1024, the hub raises it to what 5,000 connections need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 5000 + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {need}: cannot test raising to it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the hub
    try:
        started = running_hub(store, extra_args=["--max-connections", "5000"])
        hub = started.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        got_soft, got_hard = psutil.Process(hub.proc.pid).rlimit(psutil.RLIMIT_NOFILE)
        assert got_soft >= need and got_hard == hard
    finally:
        started.__exit__(None, None, None)
